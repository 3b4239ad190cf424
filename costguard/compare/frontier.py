"""The cost–quality frontier: stack variants evaluated on the same fixtures and recorded responses.

Each variant (`costguard.model.variants`) is run by `costguard.api.frontier` through the same pipeline as `costguard run`, offline:
recorded responses give measured output tokens, latency and the answers that quality is scored
on. A variant is *dominated* when another is no more expensive, no worse in quality and no
slower at p95, and strictly better in one of them; the frontier is the set of variants no other
dominates. With a policy, the recommendation is the cheapest variant with measured quality whose
run passes the policy (its floors, budgets and limits; regression rules need a baseline and are
skipped).

Quality is compared only where it was measured: a variant with no measured fixture is listed,
never placed on the frontier. p95 latency joins the objectives only when every compared variant
has measured latency (recorded responses carry it); otherwise the frontier is on cost and
quality, and says so. When no variant has measured quality (a fresh checkout, nothing recorded
yet), the frontier is on cost (and p95 latency when measured) with quality "unmeasured", and the
policy's `quality.on_unmeasured` decides the exit code: `fail` exits 1, `warn`/`ignore` exit 0
and name the cheapest variant that passes the policy's other rules — never "recommended", since
its answers were never scored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from costguard.model.variants import Variant

if TYPE_CHECKING:
    from costguard.report.run_report import RunReport

# objective -> direction
OBJECTIVES: dict[str, str] = {"cost_per_month": "min", "quality": "max", "latency_p95_s": "min"}


def dominates(
    a: Mapping[str, float], b: Mapping[str, float], objectives: Mapping[str, str]
) -> bool:
    """True when `a` is at least as good as `b` on every objective and strictly better on one."""
    strictly = False
    for name, direction in objectives.items():
        x, y = a[name], b[name]
        if direction == "min":
            x, y = -x, -y
        if x < y:
            return False
        if x > y:
            strictly = True
    return strictly


def non_dominated(
    points: Sequence[Mapping[str, float]], objectives: Mapping[str, str]
) -> list[int | None]:
    """For each point, None when no other point dominates it, else the index of one that does."""
    out: list[int | None] = []
    for i, p in enumerate(points):
        out.append(
            next((j for j, q in enumerate(points) if j != i and dominates(q, p, objectives)), None)
        )
    return out


@dataclass
class VariantOutcome:
    """One variant's figures, read from its RunReport, and its place on the frontier."""

    name: str
    description: str
    overrides: dict[str, Any]
    cost_per_month: float
    cost_estimated: bool
    quality: float | None
    pass_rate: float | None
    quality_measured: int
    quality_fixtures: int
    latency_p95_s: float | None
    latency_coverage: float | None
    routing: dict[str, float]
    verdict: str | None = None  # pass | warn | fail (with a policy)
    failed_rules: list[str] = field(default_factory=list)
    on_frontier: bool = False
    dominated_by: str | None = None
    excluded: str | None = None  # why it is not compared (no measured quality)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Frontier:
    """The evaluated variants, the frontier and the recommendation (`costguard frontier --format json`)."""

    outcomes: list[VariantOutcome]
    objectives: list[str]
    recommended: str | None
    policy: str | None
    notes: list[str]
    quality_measured: bool = True  # False: no variant has measured quality (cost-only frontier)
    on_unmeasured: str | None = None  # the policy's quality.on_unmeasured, when a policy was given
    cheapest_passing: str | None = (
        None  # quality unmeasured: the cheapest variant the policy passes
    )

    @property
    def frontier(self) -> list[VariantOutcome]:
        return [o for o in self.outcomes if o.on_frontier]

    def outcome(self, name: str) -> VariantOutcome:
        return next(o for o in self.outcomes if o.name == name)

    @property
    def exit_code(self) -> int:
        """1 when a policy was given and no variant meets it (with quality unmeasured everywhere:
        when its `on_unmeasured` is fail, or no variant passes its other rules); else 0."""
        if self.policy is None:
            return 0
        if not self.quality_measured:
            return 1 if self.on_unmeasured == "fail" or self.cheapest_passing is None else 0
        return 1 if self.recommended is None else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "frontier",
            "objectives": self.objectives,
            "policy": self.policy,
            "recommended": self.recommended,
            "frontier": [o.name for o in self.frontier],
            "quality_measured": self.quality_measured,
            "on_unmeasured": self.on_unmeasured,
            "cheapest_passing": self.cheapest_passing,
            "notes": self.notes,
            "variants": [o.to_dict() for o in self.outcomes],
        }


def outcome_of(
    variant: Variant,
    report: RunReport,
    verdict: str | None = None,
    failed_rules: Sequence[str] = (),
) -> VariantOutcome:
    """A variant's figures from its report (read, never recomputed), with its policy verdict."""
    quality = report.get("quality") or {}
    latency = report.get("latency") or {}
    totals = report.totals
    return VariantOutcome(
        name=variant.name,
        description=variant.description,
        overrides=variant.overrides_dict(),
        cost_per_month=totals["cost_per_month"],
        cost_estimated=bool(totals.get("estimated")),
        quality=quality.get("score"),
        pass_rate=quality.get("pass_rate"),
        quality_measured=quality.get("measured", 0),
        quality_fixtures=quality.get("fixtures", 0),
        latency_p95_s=(latency.get("e2e_s") or {}).get("p95"),
        latency_coverage=latency.get("coverage"),
        routing=dict(report.get("routing", {}).get("shares", {})),
        verdict=verdict,
        failed_rules=list(failed_rules),
    )


MEASURE_QUALITY = (
    "to measure quality, record answers with a live backend (`costguard run --backend endpoint`, "
    "or `--backend vllm` on a GPU runner; add `--variant 'only large'` etc. so every tier answers "
    "every fixture), commit `recordings/`, and run `costguard frontier` again"
)


def place(
    outcomes: list[VariantOutcome], *, policy: str | None, on_unmeasured: str = "warn"
) -> Frontier:
    """Mark the frontier and pick the recommendation (pure: outcomes in, Frontier out).

    `on_unmeasured` is the policy's `quality.on_unmeasured`; it decides the recommendation when
    no variant has measured quality.
    """
    notes: list[str] = []
    compared = []
    for o in outcomes:
        if o.quality is None:
            o.excluded = "no measured quality (no recorded responses for its answers)"
        else:
            compared.append(o)
    objectives = dict(OBJECTIVES)
    quality_measured = bool(compared)
    if not quality_measured:
        # Nothing recorded yet: the frontier is still useful on what is known (cost, and p95
        # latency when measured); quality stays "unmeasured", never guessed.
        compared = list(outcomes)
        for o in compared:
            o.excluded = None
        del objectives["quality"]
    if not compared or any(o.latency_p95_s is None for o in compared):
        del objectives["latency_p95_s"]
        if compared and quality_measured:
            notes.append(
                "p95 latency is not measured for every variant: the frontier is on cost and quality"
            )
    if not quality_measured:
        on = " and p95 latency" if "latency_p95_s" in objectives else ""
        notes.append(
            f"quality is unmeasured for every variant (no recorded responses): the frontier is on "
            f"cost{on} only; {MEASURE_QUALITY}"
        )
    points = [{k: getattr(o, k) for k in objectives} for o in compared]
    for o, by in zip(compared, non_dominated(points, objectives), strict=True):
        o.on_frontier = by is None
        o.dominated_by = compared[by].name if by is not None else None
    if any(o.cost_estimated for o in outcomes):
        notes.append(
            "costs marked * rest on estimates (expected/prior output tokens, approximate prompt token counts or declared GPU throughput)"
        )
    recommended = cheapest_passing = None
    if policy is not None:
        eligible = [o for o in compared if o.verdict != "fail"]
        best = (
            min(
                eligible,
                key=lambda o: (o.cost_per_month, -(o.quality or 0.0), o.latency_p95_s or 0.0),
            ).name
            if eligible
            else None
        )
        if quality_measured:
            recommended = best
            if best is None:
                notes.append(f"no variant with measured quality passes the policy {policy}")
        else:
            cheapest_passing = best
            if best is None:
                notes.append(f"no variant passes the policy {policy}")
            if on_unmeasured == "fail":
                notes.append(
                    f"{policy} sets quality.on_unmeasured: fail and no variant has measured quality"
                )
    return Frontier(
        outcomes,
        list(objectives),
        recommended,
        policy,
        notes,
        quality_measured=quality_measured,
        on_unmeasured=on_unmeasured if policy is not None else None,
        cheapest_passing=cheapest_passing,
    )
