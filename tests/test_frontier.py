"""The cost–quality frontier: dominance on hand-built cases and random ones, stack variants."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from costguard.compare.frontier import OBJECTIVES, VariantOutcome, dominates, non_dominated, place
from costguard.errors import ConfigError
from costguard.model.config import load_stack
from costguard.model.variants import build_variants, set_path


def outcome(
    name: str,
    cost: float,
    quality: float | None,
    latency: float | None = None,
    verdict: str | None = None,
) -> VariantOutcome:
    return VariantOutcome(
        name=name,
        description=name,
        overrides={},
        cost_per_month=cost,
        cost_estimated=False,
        quality=quality,
        pass_rate=quality,
        quality_measured=10 if quality is not None else 0,
        quality_fixtures=10,
        latency_p95_s=latency,
        latency_coverage=1.0 if latency else None,
        routing={},
        verdict=verdict,
    )


def test_a_dominated_variant_never_appears_on_the_frontier() -> None:
    outcomes = [
        outcome("current", 1000.0, 0.90, 1.2, "pass"),
        outcome("only small", 200.0, 0.70, 0.5, "fail"),
        outcome("only large", 3000.0, 0.95, 2.0, "pass"),
        outcome("worse", 1100.0, 0.85, 1.3, "pass"),  # dominated by current on all three
        outcome("tie-cost", 1000.0, 0.88, 1.2, "pass"),  # same cost and latency, lower quality
        outcome("faster", 1000.0, 0.90, 1.0, "pass"),  # dominates current (faster, else equal)
        outcome("unmeasured", 50.0, None, None, "pass"),  # no quality: listed, never compared
    ]
    frontier = place(outcomes, policy="policy.yaml")
    assert [o.name for o in frontier.frontier] == ["only small", "only large", "faster"]
    assert frontier.outcome("worse").dominated_by in ("current", "faster")
    assert frontier.outcome("tie-cost").dominated_by in ("current", "faster")
    assert frontier.outcome("current").dominated_by == "faster"
    assert (
        frontier.outcome("unmeasured").excluded and not frontier.outcome("unmeasured").on_frontier
    )
    assert frontier.objectives == ["cost_per_month", "quality", "latency_p95_s"]
    # the cheapest variant with measured quality that passes the policy
    assert frontier.recommended == "faster"
    assert frontier.exit_code == 0
    data = frontier.to_dict()
    assert (
        data["frontier"] == ["only small", "only large", "faster"]
        and data["recommended"] == "faster"
    )


def test_latency_leaves_the_objectives_when_a_variant_has_none() -> None:
    outcomes = [outcome("current", 1000.0, 0.9, 1.0), outcome("b", 900.0, 0.9, None)]
    frontier = place(outcomes, policy=None)
    assert frontier.objectives == ["cost_per_month", "quality"]
    assert [o.name for o in frontier.frontier] == ["b"]
    assert frontier.recommended is None and frontier.exit_code == 0
    assert any("p95 latency is not measured" in n for n in frontier.notes)


def test_no_variant_meeting_the_policy_exits_1() -> None:
    frontier = place([outcome("current", 10.0, 0.5, verdict="fail")], policy="p.yaml")
    assert frontier.recommended is None and frontier.exit_code == 1


def test_without_measured_quality_the_frontier_is_on_cost_and_on_unmeasured_decides() -> None:
    def outcomes() -> list[VariantOutcome]:
        return [
            outcome("current", 10.0, None, verdict="pass"),
            outcome("only small", 4.0, None, verdict="fail"),  # breaks a budget or share rule
            outcome("exact cache off", 12.0, None, verdict="pass"),
            outcome("cheap", 8.0, None, verdict="warn"),  # quality floors warn: unmeasured
        ]

    warn = place(outcomes(), policy="p.yaml", on_unmeasured="warn")
    assert warn.objectives == ["cost_per_month"] and not warn.quality_measured
    assert [o.name for o in warn.frontier] == ["only small"]
    assert warn.outcome("current").dominated_by is not None and not warn.outcome("current").excluded
    assert warn.recommended is None and warn.cheapest_passing == "cheap" and warn.exit_code == 0
    assert any("quality is unmeasured for every variant" in n for n in warn.notes)
    assert any("costguard run --backend endpoint" in n for n in warn.notes)
    assert place(outcomes(), policy="p.yaml", on_unmeasured="ignore").exit_code == 0
    strict = place(outcomes(), policy="p.yaml", on_unmeasured="fail")
    assert strict.recommended is None and strict.exit_code == 1
    broken = [outcome("current", 10.0, None, verdict="fail")]
    assert place(broken, policy="p.yaml", on_unmeasured="warn").exit_code == 1
    assert any("on_unmeasured: fail" in n for n in strict.notes)
    # p95 latency joins when measured for every variant, quality still unmeasured
    timed = place(
        [outcome("a", 10.0, None, latency=1.0), outcome("b", 12.0, None, latency=0.5)], policy=None
    )
    assert timed.objectives == ["cost_per_month", "latency_p95_s"]
    assert [o.name for o in timed.frontier] == ["a", "b"] and timed.exit_code == 0


def test_frontier_on_the_bundled_example_without_recordings_exits_0() -> None:
    from tests.conftest import REPO, run_cli

    proc = run_cli(
        "frontier",
        "--policy",
        "policies/default.yaml",
        "--variant",
        "only small",
        cwd=REPO,
        env={"COLUMNS": "400"},  # one line per message
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Non-dominated on cost (quality unmeasured):" in proc.stdout
    assert "Cheapest variant that passes policies/default.yaml: " in proc.stdout
    assert "Not a recommendation: its quality is unmeasured (on_unmeasured: warn)" in proc.stdout
    assert "costguard run --backend endpoint" in proc.stdout


points = st.lists(
    st.fixed_dictionaries(
        {
            "cost_per_month": st.integers(0, 5).map(float),
            "quality": st.integers(0, 5).map(lambda x: x / 5),
            "latency_p95_s": st.integers(0, 5).map(float),
        }
    ),
    min_size=1,
    max_size=12,
)


@given(points)
def test_non_dominated_is_exactly_the_set_nobody_dominates(pts: list[dict[str, float]]) -> None:
    marks = non_dominated(pts, OBJECTIVES)
    for i, by in enumerate(marks):
        dominated = any(dominates(q, pts[i], OBJECTIVES) for j, q in enumerate(pts) if j != i)
        assert (by is not None) == dominated
        if by is not None:
            assert dominates(pts[by], pts[i], OBJECTIVES)
    assert any(by is None for by in marks)  # a finite set always has a non-dominated point


# -- variants -------------------------------------------------------------------------------------------


def test_set_path_addresses_tiers_by_name_and_lists_by_index() -> None:
    data = {"tiers": [{"name": "small", "model": "a"}], "router": {"rules": [{"tier": "small"}]}}
    set_path(data, "tiers.small.model", "b")
    set_path(data, "router.rules[0].tier", "large")
    set_path(data, "router.rules.0.min_prompt_tokens", 10)
    assert data == {
        "tiers": [{"name": "small", "model": "b"}],
        "router": {"rules": [{"tier": "large", "min_prompt_tokens": 10}]},
    }
    for path, message in (
        ("tiers.huge.model", "no item named 'huge'"),
        ("router.rules[3].tier", "out of range"),
        ("nothing.here", "there is no 'nothing'"),
        ("a..b", "not a dotted config path"),
    ):
        with pytest.raises(ValueError, match=message):
            set_path(data, path, 1)


def test_standard_declared_and_swept_variants(project_dir: Path) -> None:
    config = project_dir / "costguard.yaml"
    config.write_text(
        config.read_text()
        + """\
frontier:
  variants:
    cheap-large: {tiers.large.pricing.gpu_hour_usd: 1.5}
  sweeps:
    router.rules[0].suites: [[support], [coding]]
"""
    )
    variants = build_variants(load_stack(config))
    names = [v.name for v in variants]
    assert names[:4] == ["current", "only small", "only large", "exact cache off"]
    assert "cheap-large" in names
    # sweeping rules[0].suites to [coding] is the current stack: the duplicate is dropped
    assert (
        "router.rules[0].suites=['support']" in names
        and "router.rules[0].suites=['coding']" not in names
    )
    only_large = next(v for v in variants if v.name == "only large").config
    assert (
        only_large.router is not None
        and only_large.router.default_tier == "large"
        and not only_large.router.rules
    )
    assert (
        next(v for v in variants if v.name == "cheap-large")
        .config.tier("large")
        .pricing.gpu_hour_usd
        == 1.5
    )
    assert [v.name for v in build_variants(load_stack(config), auto=False)][0] == "current"


def test_three_tiers_give_without_variants_and_thresholds(tmp_path: Path) -> None:
    from tests.conftest import REPO

    stack = load_stack(REPO / "costguard.yaml")
    variants = {v.name: v for v in build_variants(stack)}
    without = variants["without quantized"].config.router
    assert without is not None and {t.tier for t in without.thresholds} == {"small", "large"}  # type: ignore[union-attr]
    scaled = variants["thresholds x2"].config.router
    shipped = stack.config.router
    assert scaled is not None and shipped is not None
    assert [t.max_score for t in scaled.thresholds] == [
        min(10.0, round(2 * t.max_score, 4)) for t in shipped.thresholds
    ]  # type: ignore[union-attr]


def test_a_bad_variant_is_a_located_config_error(project_dir: Path) -> None:
    config = project_dir / "costguard.yaml"
    base = config.read_text()
    config.write_text(base + "frontier:\n  variants:\n    broken: {tiers.medium.model: x}\n")
    with pytest.raises(
        ConfigError,
        match=r"costguard.yaml:\d+: frontier.tiers.medium.model: variant 'broken': .*no item named 'medium'",
    ):
        build_variants(load_stack(config))
    config.write_text(
        base + "frontier:\n  variants:\n    broken: {traffic.requests_per_month: -5}\n"
    )
    with pytest.raises(ConfigError, match=r"variant 'broken': .*greater than 0"):
        build_variants(load_stack(config))
