"""Live backends: the planned calls served by real OpenAI-compatible servers, every number measured.

- `endpoint`: each tier's `endpoint.base_url` (vLLM, an existing deployment such as vLLM
  production-stack, a hosted provider), or one external router's URL for every request, each
  reply attributed to a tier by its `model` field.
- `vllm`: the stack costguard launched (`costguard stack up`), one server per tier.

Routing and the result caches ran upstream in the pipeline, exactly as for the offline backend:
calls a cache answers are never sent (they are resolved like offline calls, from the replies just
recorded or earlier recordings). Around the replay each server's `/metrics` is scraped and the
deltas reconciled with the replies' usage; every reply is recorded; each tier's throughput is
profiled for GPU-time pricing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from costguard.engine.backends import CallResult, PlannedCall
from costguard.engine.backends.offline import OfflineBackend
from costguard.engine.recordings import (
    Recording,
    RecordingStore,
    confidence_from_reply,
    hardware_signature,
    recording_key,
)
from costguard.errors import ConfigError
from costguard.model.config import ExternalRouterConfig, LoadedStack, ReplayConfig, TierConfig

if TYPE_CHECKING:
    from costguard.serving.metrics import MetricsSnapshot
    from costguard.serving.openai_client import CompletionResult
    from costguard.serving.replay import Progress, ReplayOutcome

JSON_FORMATS = ("json_object", "json_schema")


@dataclass(frozen=True)
class Target:
    """Where one tier's (or the external router's) requests go."""

    base_url: str
    model: str  # the `model` sent
    api_key: str | None = None


def _api_key(env_name: str | None, where: str) -> str | None:
    if env_name is None:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise ConfigError(
            f"the environment variable {env_name} (the API key) is not set", key=where
        )
    return value


def endpoint_targets(stack: LoadedStack) -> dict[str, Target]:
    """Each tier's configured endpoint (tiers without one are left out)."""
    out = {}
    for i, tier in enumerate(stack.config.tiers):
        if tier.endpoint is not None:
            key = _api_key(
                tier.endpoint.api_key_env, stack.where("tiers", i, "endpoint", "api_key_env")
            )
            out[tier.name] = Target(tier.endpoint.base_url, tier.api_model_name, key)
    return out


def router_target(stack: LoadedStack) -> Target | None:
    router = stack.config.router
    if not isinstance(router, ExternalRouterConfig):
        return None
    key = _api_key(router.api_key_env, stack.where("router", "api_key_env"))
    return Target(router.base_url, router.model, key)


def reply_tiers(stack: LoadedStack) -> dict[str, str]:
    """Reply `model` -> tier, for attributing an external router's replies."""
    out: dict[str, str] = {}
    for tier in stack.config.tiers:
        for name in (tier.model, tier.served_model_name, tier.name):
            if name:
                out.setdefault(name, tier.name)
    router = stack.config.router
    if isinstance(router, ExternalRouterConfig):
        out.update(router.models)
    return out


class LiveBackend:
    """Replays the planned calls against live servers and measures every number."""

    def __init__(
        self,
        stack: LoadedStack,
        targets: dict[str, Target],
        *,
        name: str = "endpoint",
        recordings: RecordingStore | None = None,
        replay: ReplayConfig | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.stack = stack
        self.config = stack.config
        self.targets = targets
        self.name = name
        self.recordings = recordings
        self.settings = replay or stack.config.replay
        self.progress = progress
        self.router = router_target(stack)
        self.reply_tiers = reply_tiers(stack)
        self.incomplete_reason: str | None = None
        self.sections: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.profiles: dict[str, dict[str, Any]] = {}

    def for_evaluation(self) -> LiveBackend:
        """A backend for evaluation requests (LLM-judge calls) to the tiers' own endpoints.

        Its replies are recorded like any other (offline runs replay them), but its replay and
        server-metrics sections, throughput profiles and failures stay its own: judging is not
        the run's traffic, and a judge that fails leaves assertions unmeasured, not the run
        incomplete. Never through an external router: a judge tier is named.
        """
        backend = LiveBackend(
            self.stack, self.targets, name=self.name, recordings=self.recordings,
            replay=self.settings.model_copy(update={"scrape_metrics": False, "request_rate_per_s": None}),
        )  # fmt: skip
        backend.router = None
        return backend

    # -- planning -----------------------------------------------------------------------
    def _target(self, tier: TierConfig) -> Target:
        if self.router is not None:
            return self.router
        target = self.targets.get(tier.name)
        if target is None:
            i = next(i for i, t in enumerate(self.config.tiers) if t.name == tier.name)
            raise ConfigError(
                f"tier {tier.name!r} gets traffic but has no endpoint: give it endpoint.base_url "
                f"(or use --backend vllm to launch it)",
                key=self.stack.where("tiers", i, "endpoint"),
            )
        return target

    def _payload(self, call: PlannedCall, target: Target) -> dict[str, Any]:
        model = (call.fixture.model or target.model) if self.router is not None else target.model
        return {
            "model": model,
            **call.fixture.request_body(),
            **call.fixture.sampling.as_request_params(),
        }

    # -- serving ------------------------------------------------------------------------
    def execute(self, calls: Sequence[PlannedCall]) -> list[CallResult | None]:
        from costguard.serving.openai_client import RetryPolicy
        from costguard.serving.replay import ReplayRequest, run_replay

        live = [i for i, c in enumerate(calls) if c.answered_by is None]
        targets = [self._target(calls[i].tier) for i in live]
        requests = [
            ReplayRequest(t.base_url, self._payload(calls[i], t), t.api_key)
            for i, t in zip(live, targets, strict=True)
        ]
        scrape_urls = self._metrics_urls(calls, live)
        before = self._scrape(scrape_urls)
        outcome = run_replay(
            requests,
            concurrency=self.settings.concurrency,
            timeout_s=self.settings.timeout_s,
            retry=RetryPolicy(max_attempts=self.settings.max_attempts),
            request_rate_per_s=self.settings.request_rate_per_s,
            seed=self.config.traffic.seed,
            stream=self.settings.stream,
            progress=self.progress,
        )
        after = self._scrape(scrape_urls)

        results: list[CallResult | None] = [None] * len(calls)
        served: dict[str, list[int]] = {}  # tier -> positions in `live` with a reply
        for pos, i in enumerate(live):
            reply = outcome.results[pos]
            if reply is None:
                continue
            tier = self._served_tier(calls[i], reply)
            if tier is None:
                if self.incomplete_reason is None:
                    self.incomplete_reason = (
                        f"the external router answered with model {reply.model!r}, which is no tier's name, "
                        "served_model_name or model (map it with router.models)"
                    )
                continue
            served.setdefault(tier, []).append(pos)
            results[i] = self._measured(calls[i], tier, reply)
        self.incomplete_reason = outcome.stopped or self.incomplete_reason
        if self.recordings is not None:
            self.recordings.save()

        # Calls a result cache answered: resolved like offline calls (recordings first).
        answered = [i for i, c in enumerate(calls) if c.answered_by is not None]
        if answered:
            offline = OfflineBackend(self.config, self.recordings)
            for i, result in zip(
                answered, offline.execute([calls[i] for i in answered]), strict=True
            ):
                results[i] = result

        self.sections = {
            "replay": self._replay_section(outcome, calls, live, served),
            "server_metrics": self._reconcile(before, after, outcome, calls, live, served),
        }
        if self.incomplete_reason is None:
            self._profile(outcome, served, calls, live)
        return results

    def _served_tier(self, call: PlannedCall, reply: CompletionResult) -> str | None:
        if self.router is None:
            return call.tier.name
        return self.reply_tiers.get(reply.model)

    def _measured(self, call: PlannedCall, tier: str, reply: CompletionResult) -> CallResult:
        tier_config = self.config.tier(tier)
        fmt = call.fixture.sampling.response_format or {}
        confidence = confidence_from_reply(reply.text) if fmt.get("type") in JSON_FORMATS else None
        key = recording_key(call.fixture, tier_config.model)
        if self.recordings is not None and self.settings.record:
            self.recordings.put(
                Recording(
                    key=key,
                    fixture_id=call.fixture.id,
                    content_hash=call.fixture.content_hash,
                    tier=tier,
                    model=tier_config.model,
                    reply_model=reply.model,
                    text=reply.text,
                    finish_reason=reply.finish_reason,
                    prompt_tokens=reply.prompt_tokens,
                    cached_tokens=reply.cached_tokens,
                    completion_tokens=reply.completion_tokens,
                    e2el_s=round(reply.e2el_s, 6),
                    ttft_s=_round(reply.ttft_s),
                    tpot_s=_round(reply.tpot_s),
                    confidence=confidence,
                    backend=self.name,
                    route=f"external:{self.router.model}" if self.router is not None else None,
                )  # fmt: skip
            )
        return CallResult(
            input_tokens=reply.prompt_tokens,
            cached_tokens=reply.cached_tokens,
            output_tokens=reply.completion_tokens,
            input_source="measured",
            cached_source="measured" if reply.cached_reported else "unreported",
            output_source="measured",
            latency_s=reply.e2el_s,
            latency_source="measured",
            confidence=confidence,
            text=reply.text,
            response_ref=key if self.recordings is not None and self.settings.record else None,
            tier=tier if self.router is not None else None,
        )

    # -- server metrics -----------------------------------------------------------------
    def _metrics_urls(self, calls: Sequence[PlannedCall], live: list[int]) -> dict[str, str]:
        """tier -> URL whose /metrics counts that tier's work (its own server, not a router)."""
        if not self.settings.scrape_metrics:
            return {}
        if self.router is None:
            return {calls[i].tier.name: self.targets[calls[i].tier.name].base_url for i in live}
        return {name: t.base_url for name, t in self.targets.items()}

    def _scrape(self, urls: dict[str, str]) -> dict[str, MetricsSnapshot | str]:
        from costguard.errors import BackendError
        from costguard.serving.metrics import scrape

        snapshots: dict[str, MetricsSnapshot | str] = {}
        for url in sorted(set(urls.values())):
            try:
                snapshots[url] = scrape(url)
            except BackendError as exc:
                snapshots[url] = str(exc)
        return {tier: snapshots[url] for tier, url in urls.items()}

    def _reconcile(
        self,
        before: dict[str, MetricsSnapshot | str],
        after: dict[str, MetricsSnapshot | str],
        outcome: ReplayOutcome,
        calls: Sequence[PlannedCall],
        live: list[int],
        served: dict[str, list[int]],
    ) -> dict[str, Any]:
        from costguard.serving.metrics import ClientUsage, diff, reconcile

        section: dict[str, Any] = {}
        for tier in sorted(before):
            usage = ClientUsage()
            for pos in served.get(tier, []):
                r = outcome.results[pos]
                assert r is not None
                usage.add(r.prompt_tokens, r.cached_tokens, r.completion_tokens)
            a, b = before[tier], after.get(tier)
            if isinstance(a, str) or isinstance(b, str) or b is None:
                section[tier] = {"available": False, "reason": a if isinstance(a, str) else b}
                continue
            delta = diff(a, b, model_name=self.config.tier(tier).api_model_name)
            notes = reconcile(delta, usage)
            section[tier] = {
                "available": True,
                "server": {
                    "prompt_tokens": delta.prompt_tokens,
                    "generation_tokens": delta.generation_tokens,
                    "prefix_cache_queries": delta.prefix_cache_queries,
                    "prefix_cache_hits": delta.prefix_cache_hits,
                    "prefix_hit_rate": delta.prefix_hit_rate,
                    "requests": delta.requests,
                },
                "client": {
                    "prompt_tokens": usage.prompt_tokens,
                    "cached_tokens": usage.cached_tokens,
                    "completion_tokens": usage.completion_tokens,
                    "requests": usage.requests,
                },
                "discrepancies": notes,
            }
            for note in notes:
                self.warnings.append(
                    f"server metrics of tier {tier} disagree with the replies: {note}"
                )
        return section

    # -- summaries ----------------------------------------------------------------------
    def _replay_section(
        self,
        outcome: ReplayOutcome,
        calls: Sequence[PlannedCall],
        live: list[int],
        served: dict[str, list[int]],
    ) -> dict[str, Any]:
        from costguard.serving.replay import latency_distribution, latency_summary

        replies = [r for r in outcome.results if r is not None]
        duration = outcome.duration_s or 1e-9
        return {
            "concurrency": self.settings.concurrency,
            "request_rate_per_s": self.settings.request_rate_per_s,
            "stream": self.settings.stream,
            "duration_s": round(outcome.duration_s, 3),
            "requests": {
                "planned": len(calls),
                "answered_by_cache": len(calls) - len(live),
                "sent": len(live),
                "completed": len(replies),
                "failed": len(outcome.failures),
                "retries": outcome.retries,
            },
            "request_throughput": len(replies) / duration,
            "input_throughput": sum(r.prompt_tokens for r in replies) / duration,
            "output_throughput": sum(r.completion_tokens for r in replies) / duration,
            "latency": {"all": latency_summary(replies)}
            | {
                tier: latency_summary([outcome.results[p] for p in positions])  # type: ignore[misc]
                for tier, positions in sorted(served.items())
            },
            "distribution": {"all": latency_distribution(replies)}
            | {
                tier: latency_distribution([outcome.results[p] for p in positions])  # type: ignore[misc]
                for tier, positions in sorted(served.items())
            },
            "stopped": outcome.stopped,
        }

    def _profile(
        self,
        outcome: ReplayOutcome,
        served: dict[str, list[int]],
        calls: Sequence[PlannedCall],
        live: list[int],
    ) -> None:
        from costguard.serving.replay import throughput_profile

        for tier, positions in sorted(served.items()):
            if len(positions) < self.settings.min_profile_requests:
                continue
            replies = [outcome.results[p] for p in positions]
            spans = [outcome.spans[p] for p in positions]
            profile = throughput_profile(replies, spans)  # type: ignore[arg-type]
            if profile is None:
                continue
            self.profiles[tier] = {
                **{k: round(v, 3) for k, v in profile.items()},
                "concurrency": self.settings.concurrency,
                "hardware": hardware_signature(self.config.tier(tier)),
                "backend": self.name,
            }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
