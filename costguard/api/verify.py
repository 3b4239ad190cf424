"""`costguard verify`: offline prompt token counts against a running server's, fixture by fixture."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from costguard.engine.project import Project
from costguard.engine.run import count_prompt_tokens
from costguard.errors import UsageError

VERIFY_VIA = ("auto", "tokenize", "completion", "both")


def verify(
    project: Project,
    *,
    via: str = "auto",
    tiers: Sequence[str] | None = None,
    urls: dict[str, str] | None = None,
    concurrency: int = 4,
    timeout_s: float = 120.0,
) -> Any:
    """Offline prompt token counts against a running server's, for every fixture and tier.

    `via`: "tokenize" asks vLLM's `/tokenize` (the chat request with its tools, rendered as the
    chat route renders it); "completion" sends a one-token chat completion and reads
    `usage.prompt_tokens` (any OpenAI-compatible server); "auto" uses /tokenize and falls back to
    completions where the server has no such route; "both" checks each way. `urls` maps a tier
    (or "*" for every tier) to its server, else the tier's `endpoint.base_url`.
    Returns a VerifyReport; its exit code is 1 on any mismatch. A server that cannot be reached
    is a BackendError (exit 2): nothing was verified.
    """
    import asyncio

    from costguard.engine.backends.live import Target, endpoint_targets
    from costguard.report.verification import VerifyReport, VerifyRow

    if via not in VERIFY_VIA:
        raise UsageError(f"--via must be one of {', '.join(VERIFY_VIA)} (got {via!r})")
    if concurrency < 1 or timeout_s <= 0:
        raise UsageError("--concurrency must be >= 1 and --timeout > 0")
    names = [t.name for t in project.config.tiers]
    chosen = list(tiers) if tiers else names
    unknown = [t for t in chosen if t not in names]
    if unknown:
        raise UsageError(f"unknown tier(s) {', '.join(unknown)} (tiers: {', '.join(names)})")
    urls = dict(urls or {})
    bad = sorted(set(urls) - set(names) - {"*"})
    if bad:
        raise UsageError(
            f"--url names unknown tier(s) {', '.join(bad)} (tiers: {', '.join(names)})"
        )
    configured = endpoint_targets(project.stack)
    from costguard.serving import stack as stack_processes

    state = stack_processes.read_state(project.stack)  # `costguard stack up`, if it ran
    targets: dict[str, Target] = {}
    for name in chosen:
        tier = project.config.tier(name)
        url = urls.get(name) or urls.get("*")
        launched = state.tier(name) if state is not None else None
        if url is not None:
            key = configured[name].api_key if name in configured else None
            targets[name] = Target(url, tier.api_model_name, key)
        elif name in configured:
            targets[name] = configured[name]
        elif launched is not None and launched.running:
            key = os.environ.get(tier.serve.api_key_env) if tier.serve.api_key_env else None
            targets[name] = Target(launched.base_url, tier.api_model_name, key)
        else:
            raise UsageError(
                f"tier {name!r} has no server to verify against: pass --url {name}=URL "
                "(or --url URL for every tier), set its endpoint.base_url, or start the stack "
                "with `costguard stack up`"
            )
    offline = count_prompt_tokens(project)
    warnings: list[str] = []
    for name in chosen:
        tok = project.tokenizer(name)
        if not tok.exact:
            warnings.append(
                f"tier {name} counts with a tokenizer that is not the model's own "
                f"({tok.description}): mismatches are expected until `tokenizer.hf:` points at "
                "the model's tokenizer.json"
            )
    rows: list[VerifyRow] = []

    async def run() -> None:
        import aiohttp

        gate = asyncio.Semaphore(concurrency)
        async with aiohttp.ClientSession() as session:
            for name in chosen:
                tier_rows, notes = await _verify_tier(
                    project,
                    session,
                    gate,
                    name,
                    targets[name],
                    offline.counts[name],
                    via=via,
                    timeout_s=timeout_s,
                )
                rows.extend(tier_rows)
                warnings.extend(notes)

    asyncio.run(run())
    return VerifyReport(
        stack=project.config.name,
        rows=rows,
        servers={name: targets[name].base_url for name in chosen},
        warnings=warnings,
    )


async def _verify_tier(
    project: Project,
    session: Any,
    gate: Any,
    name: str,
    target: Any,
    counts: Sequence[int],
    *,
    via: str,
    timeout_s: float,
) -> tuple[list[Any], list[str]]:
    """Every fixture of one tier against its server: the rows and what to warn about."""
    import asyncio

    from costguard.errors import BackendError
    from costguard.report.verification import VerifyRow
    from costguard.serving.openai_client import BackendConnectionError, BackendTimeoutError
    from costguard.serving.tokenize import RouteMissing, one_token_completion, tokenize_chat

    source = project.tokenizer(name).input_source
    notes: list[str] = []

    async def check(i: int, mode: str) -> VerifyRow:
        fx = project.fixtures[i]
        body = {"model": target.model, **fx.request_body()}
        call = tokenize_chat if mode == "tokenize" else one_token_completion
        row = VerifyRow(
            fixture=fx.id,
            location=fx.location,
            tier=name,
            offline=counts[i],
            offline_source=source,
            server=None,
            via=mode,
        )
        async with gate:
            try:
                got = await call(
                    session, target.base_url, body, api_key=target.api_key, timeout_s=timeout_s
                )
            except (BackendConnectionError, BackendTimeoutError, RouteMissing):
                raise
            except BackendError as exc:  # the server refused this one request
                row.error = str(exc)
                return row
        row.server, row.cached_tokens = got.prompt_tokens, got.cached_tokens
        return row

    indices = list(range(len(project.fixtures)))
    modes = ["completion"] if via == "completion" else ["tokenize"]
    if via == "both":
        modes.append("completion")
    done: list[VerifyRow] = []
    try:
        if via == "auto" and indices:
            try:
                done.append(await check(indices[0], "tokenize"))
            except RouteMissing:
                notes.append(
                    f"tier {name}: {target.base_url} has no /tokenize route (not vLLM?): "
                    "checked with one-token completions (usage.prompt_tokens)"
                )
                modes = ["completion"]
        todo = [(i, m) for m in modes for i in indices][len(done) :]
        done += await asyncio.gather(*(check(i, m) for i, m in todo))
    except RouteMissing as exc:
        raise BackendError(
            f"tier {name}: {exc}; use --via completion for a server without it"
        ) from None
    except (BackendConnectionError, BackendTimeoutError) as exc:
        raise BackendError(f"tier {name}: cannot verify: {exc}") from None
    completion = [r for r in done if r.via == "completion" and r.server is not None]
    if any(r.cached_tokens is None for r in completion):
        notes.append(
            f"tier {name}: {target.base_url} does not report usage.prompt_tokens_details: "
            "cached prompt tokens cannot be measured there (vLLM: --enable-prompt-tokens-details); "
            "live runs label them `unreported`, never 0"
        )
    return done, notes
