"""Threshold calibration: pick the router's thresholds so a target share of traffic reaches each tier.

The configured router scores every fixture (embeddings come from the cache, so a warm calibration
imports no torch); the thresholds become quantiles of those scores weighted by each fixture's
requests per month. Tiers without a target keep their current shares, scaled to fill what the
targets leave. A holdout fixture set, routed with the new thresholds, shows how far the shares
drift on traffic the calibration did not see.

`write_thresholds` saves the new values into costguard.yaml by editing only the numbers of the
threshold lines (found through the YAML line table), so comments and formatting stay; the edited
text is parsed and validated again before it replaces the file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from costguard.engine.routing.factory import build_router
from costguard.engine.routing.router import (
    RouteInput,
    Router,
    router_tokenizer_tier,
    tiers_by_strength,
)
from costguard.errors import ConfigError, UsageError
from costguard.model.config import (
    EmbeddingRouterConfig,
    LengthRouterConfig,
    LoadedStack,
    StackConfig,
)
from costguard.model.fixtures import Fixture

SHARE_TOLERANCE = 1e-9
THRESHOLD_SLACK = (
    0.005  # half a point of share traded for a threshold far from every fixture's score
)


@dataclass
class Calibration:
    """New thresholds for the configured router and the shares they give."""

    router_kind: str
    key: str  # the threshold field: "max_score" | "max_prompt_tokens"
    tiers: list[str]  # tier of each score interval, lowest scores first (the last is default_tier)
    old: list[float]
    new: list[float]
    targets: dict[str, float]
    achieved: dict[str, float]
    before: dict[str, float]
    fixtures: int
    holdout: dict[str, float] | None = None
    holdout_fixtures: int = 0
    holdout_paths: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """False when the calibrated thresholds are the ones the config already holds."""
        return [float(v) for v in self.new] != [float(v) for v in self.old]

    def missed(self) -> dict[str, str]:
        """Tiers whose calibrated share is more than half a point (the slack) off the target,
        each with why: the fixtures' scores leave no cut closer to it."""
        out = {}
        for tier in self.tiers:
            target, got = self.targets[tier], self.achieved[tier]
            if abs(got - target) > THRESHOLD_SLACK + 1e-9:
                out[tier] = (
                    f"{tier}: {100 * got:.1f}% instead of {100 * target:.1f}%: no cut between two "
                    f"fixtures' scores comes closer (fixtures with tied scores, or one fixture "
                    f"carrying a large share of traffic, move together); add fixtures or pick a "
                    f"reachable target"
                )
        return out

    @property
    def drift(self) -> dict[str, float] | None:
        """Holdout share minus calibrated share, per tier (fractions; x100 for points)."""
        if self.holdout is None:
            return None
        return {t: self.holdout[t] - self.achieved[t] for t in self.achieved}

    def to_dict(self) -> dict[str, Any]:
        return {
            "router": self.router_kind,
            "key": self.key,
            "tiers": self.tiers,
            "old": self.old,
            "new": self.new,
            "targets": self.targets,
            "before": self.before,
            "achieved": self.achieved,
            "fixtures": self.fixtures,
            "holdout": self.holdout,
            "holdout_fixtures": self.holdout_fixtures,
            "holdout_paths": self.holdout_paths,
            "drift": self.drift,
            "changed": self.changed,
            "missed": self.missed(),
        }


def interval_tiers(config: StackConfig) -> tuple[str, list[float], list[str]]:
    """(threshold key, current values, tier per interval) of a router that calibrate can tune."""
    rc = config.router
    if isinstance(rc, EmbeddingRouterConfig):
        return (
            "max_score",
            [t.max_score for t in rc.thresholds],
            [t.tier for t in rc.thresholds] + [rc.default_tier],
        )
    if isinstance(rc, LengthRouterConfig):
        # the order the written list is in (calibrate rewrites each entry in place)
        values = [float(t.max_prompt_tokens) for t in rc.thresholds]
        if values != sorted(values):
            raise UsageError(
                "calibrate needs the length router's thresholds in increasing max_prompt_tokens order"
            )
        return "max_prompt_tokens", values, [t.tier for t in rc.thresholds] + [rc.default_tier]
    kind = rc.kind if rc is not None else "none"
    raise UsageError(
        f"calibrate tunes score thresholds; the {kind} router has none (use a complexity, knn or length router)"
    )


def shares_at(
    scores: Sequence[float],
    weights: Sequence[float],
    thresholds: Sequence[float],
    tiers: Sequence[str],
) -> dict[str, float]:
    """Share of weight per tier when scores <= thresholds[k] go to tiers[k] (else the last tier)."""
    out = {t: 0.0 for t in tiers}
    total = sum(weights)
    for s, w in zip(scores, weights, strict=True):
        for t, tier in zip(thresholds, tiers, strict=False):
            if s <= t:
                out[tier] += w
                break
        else:
            out[tiers[-1]] += w
    return {t: (v / total if total else 0.0) for t, v in out.items()}


def _tiers_of(scores: Sequence[float], thresholds: Sequence[float]) -> list[int]:
    """Each score's interval: the first k with score <= thresholds[k], else len(thresholds)."""
    return [next((k for k, t in enumerate(thresholds) if s <= t), len(thresholds)) for s in scores]


def resolve_targets(
    targets: dict[str, float], current: dict[str, float], tiers: Sequence[str]
) -> dict[str, float]:
    """Every tier's target share: the given ones, the others scaled from their current shares."""
    unknown = sorted(set(targets) - set(tiers))
    if unknown:
        raise UsageError(
            f"no threshold interval routes to tier(s) {', '.join(unknown)} (router tiers: {', '.join(tiers)})"
        )
    for tier, share in targets.items():
        if not 0.0 <= share <= 1.0:
            raise UsageError(f"target share for {tier} must be between 0 and 1 (got {share:g})")
    given = sum(targets.values())
    if given > 1.0 + SHARE_TOLERANCE:
        raise UsageError(f"target shares add up to {given:.3f}, more than 1")
    rest = [t for t in tiers if t not in targets]
    if not rest:
        if abs(given - 1.0) > 1e-6:
            raise UsageError(
                f"target shares for every tier must add up to 1 (they add up to {given:.3f})"
            )
        return dict(targets)
    left = max(0.0, 1.0 - given)
    current_rest = sum(current.get(t, 0.0) for t in rest)
    out = dict(targets)
    for t in rest:
        out[t] = left * (
            current.get(t, 0.0) / current_rest if current_rest > 0 else 1.0 / len(rest)
        )
    return out


def _short(value: float, lo: float, hi: float) -> float:
    """The shortest decimal strictly between two neighbouring scores: readable YAML, and never
    on a score, where float noise in a re-computed embedding could flip the request."""
    for digits in range(0, 10):
        r = round(value, digits)
        if lo < r < hi:
            return r
    return value


def quantile_thresholds(
    scores: Sequence[float],
    weights: Sequence[float],
    cumulative: Sequence[float],
    *,
    integer: bool = False,
    bounds: tuple[float, float] | None = None,
    slack: float = 0.0,
) -> list[float]:
    """Cut points so that the weight share of scores <= cut k is as close as possible to cumulative[k].

    A cut sits between two distinct neighbouring scores (ties move together): midway for real
    scores, on the lower score for integer ones (length thresholds are inclusive token counts).
    With `slack`, any cut whose share is within `slack` of the closest one may be taken, and the
    one in the widest gap between neighbouring scores is.
    """
    pairs = sorted(zip(scores, weights, strict=True))
    total = sum(w for _, w in pairs)
    # distinct scores with the cumulative share at and below each
    values: list[float] = []
    acc: list[float] = []
    running = 0.0
    for s, w in pairs:
        running += w
        if values and s == values[-1]:
            acc[-1] = running / total
        else:
            values.append(s)
            acc.append(running / total)
    lo_bound, hi_bound = bounds if bounds is not None else (float("-inf"), float("inf"))

    def gap(k: int) -> float:
        """Room on both sides of a cut after values[k]: how far a score can move without crossing it."""
        return float("inf") if k in (-1, len(values) - 1) else values[k + 1] - values[k]

    cuts: list[float] = []
    for target in cumulative:
        # candidate k: cut after values[k] (share acc[k]); k = -1: below everything (share 0)
        error = {-1: abs(target), **{k: abs(share - target) for k, share in enumerate(acc)}}
        closest = min(error.values())
        # Within `slack` of the closest share, take the widest gap between neighbouring scores, so
        # a score that moves a little (another machine's BLAS, bf16 autocast) keeps its tier.
        best_k = max(
            (k for k, e in error.items() if e <= closest + slack + 1e-12),
            key=lambda k: (gap(k), -error[k]),
        )
        if best_k == -1:  # below every score
            lo, hi = float("-inf"), values[0]
            cut = values[0] - 1.0
        elif best_k == len(values) - 1:  # above every score
            lo, hi = values[-1], float("inf")
            cut = values[-1] if integer else values[-1] + 1.0
        else:
            lo, hi = values[best_k], values[best_k + 1]
            cut = lo if integer else (lo + hi) / 2
        cut = float(int(cut)) if integer else _short(cut, lo, hi)
        cuts.append(min(max(cut, lo_bound), hi_bound))
    # never decreasing (the config requires it)
    for k in range(1, len(cuts)):
        cuts[k] = max(cuts[k], cuts[k - 1])
    return cuts


def route_scores(
    router: Router, config: StackConfig, fixtures: Sequence[Fixture], tokens: Sequence[int]
) -> list[float]:
    """The router's score for every fixture (length routers: the prompt tokens)."""
    decisions = router.route([RouteInput(fx, n) for fx, n in zip(fixtures, tokens, strict=True)])
    scores = [d.score for d in decisions]
    if any(s is None for s in scores):
        raise UsageError(f"the {router.kind} router gave a request no score: nothing to calibrate")
    return [float(s) for s in scores]  # type: ignore[arg-type]


def _router_tokens(project: Any, fixtures: Sequence[Fixture]) -> list[int]:
    """Prompt tokens with the router's tokenizer (needed only by the length router)."""
    if not isinstance(project.config.router, LengthRouterConfig):
        return [0] * len(fixtures)
    tok = project.tokenizer(router_tokenizer_tier(project.config))
    return [tok.count_chat(fx.messages, tools=fx.tools) for fx in fixtures]


def calibrate(
    project: Any,
    targets: dict[str, float],
    *,
    holdout: Sequence[Fixture] | None = None,
    holdout_paths: Sequence[str] = (),
) -> Calibration:
    """New thresholds for `project`'s router so each tier gets its target share of the fixtures."""
    from costguard.engine.traffic import monthly_requests

    config = project.config
    key, old, tiers = interval_tiers(config)
    if len(set(tiers)) != len(tiers):
        raise UsageError("calibrate needs each tier once among the thresholds and default_tier")
    if not project.fixtures:
        raise UsageError("no fixtures to calibrate on")
    router = build_router(config, project=project)
    scores = route_scores(
        router, config, project.fixtures, _router_tokens(project, project.fixtures)
    )
    weights = monthly_requests(project.fixtures, config)
    before = shares_at(scores, weights, old, tiers)
    full = resolve_targets(targets, before, tiers)
    cumulative, acc = [], 0.0
    for tier in tiers[:-1]:
        acc += full[tier]
        cumulative.append(min(acc, 1.0))
    bounds = getattr(router, "score_range", None)
    new = quantile_thresholds(
        scores,
        weights,
        cumulative,
        integer=key == "max_prompt_tokens",
        bounds=bounds,
        slack=THRESHOLD_SLACK,
    )
    if len(new) == len(old) and _tiers_of(scores, new) == _tiers_of(scores, old):
        # The config's thresholds already sit in the gaps calibration picked (same tier for every
        # fixture): keep them rather than churn the file over where inside a gap a cut lies.
        new = [float(v) for v in old]
    result = Calibration(
        router_kind=router.kind,
        key=key,
        tiers=list(tiers),
        old=old,
        new=new,
        targets=full,
        achieved=shares_at(scores, weights, new, tiers),
        before=before,
        fixtures=len(project.fixtures),
    )
    if holdout is not None:
        if not holdout:
            raise UsageError("the holdout fixture set is empty")
        held = route_scores(router, config, holdout, _router_tokens(project, holdout))
        result.holdout = shares_at(held, monthly_requests(holdout, config), new, tiers)
        result.holdout_fixtures = len(holdout)
        result.holdout_paths = list(holdout_paths)
    return result


def strong_tier(config: StackConfig) -> str:
    return tiers_by_strength(config)[-1]


# -- writing the thresholds back into costguard.yaml ----------------------------------------------

_NUMBER = r"[-+]?(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def format_threshold(value: float, key: str) -> str:
    if key == "max_prompt_tokens":
        return str(int(value))
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def edit_thresholds(stack: LoadedStack, calibration: Calibration) -> str:
    """The config text with the threshold values replaced in place (comments and layout kept)."""
    from costguard.model.yamlio import parse_yaml, validate

    text = stack.path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    pattern = re.compile(rf"(\b{calibration.key}\s*:\s*)({_NUMBER})")
    by_line: dict[int, list[int]] = {}
    for i in range(len(calibration.new)):
        line = stack.line("router", "thresholds", i, calibration.key)
        if line is None:
            raise _not_in_place(stack, f"no line for router.thresholds[{i}].{calibration.key}")
        by_line.setdefault(line, []).append(i)
    for line, items in by_line.items():
        matches = list(pattern.finditer(lines[line - 1]))
        if len(matches) != len(items):
            raise _not_in_place(
                stack, f"line {line} does not hold exactly {len(items)} {calibration.key} value(s)"
            )
        current = lines[line - 1]
        for match, i in sorted(zip(matches, items, strict=True), key=lambda m: -m[0].start()):
            value = format_threshold(calibration.new[i], calibration.key)
            current = current[: match.start(2)] + value + current[match.end(2) :]
        lines[line - 1] = current
    edited = "".join(lines)
    try:
        check = validate(StackConfig, parse_yaml(edited, file=stack.path), file=stack.path)
    except ConfigError as exc:
        raise _not_in_place(stack, f"the edited file does not validate ({exc})") from None
    got = [getattr(t, calibration.key) for t in check.router.thresholds]  # type: ignore[union-attr]
    if [float(g) for g in got] != [float(v) for v in calibration.new]:
        raise _not_in_place(stack, "the edited values do not read back as written")
    return edited


def _not_in_place(stack: LoadedStack, why: str) -> UsageError:
    return UsageError(
        f"cannot edit the thresholds in place ({why}); set them by hand", file=stack.path
    )


def write_thresholds(stack: LoadedStack, calibration: Calibration) -> None:
    """Save the calibrated thresholds into the config file (atomically)."""
    from costguard.model.files import write_atomic

    write_atomic(stack.path, edit_thresholds(stack, calibration))
