"""The offline projection end to end on a small real project, pinned to hand-computed figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from costguard import api
from costguard.engine.traffic import arrival_order, monthly_requests
from costguard.model.pricing import PricingConfig, resolve_price
from costguard.model.stats import weighted_percentile
from tests.conftest import minilm_dir


def _count(messages: list[dict]) -> int:
    """Count independently of costguard: render the test template by hand, tokenize directly."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(minilm_dir()) / "tokenizer.json"))
    tok.no_padding()  # the MiniLM file pads to 128 for embedding; a prompt count must not
    tok.no_truncation()
    text = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages) + "<|assistant|>\n"
    return len(tok.encode(text, add_special_tokens=False).ids)


def test_projection_matches_hand_computed_costs(project_dir: Path) -> None:
    project = api.load_project(project_dir / "costguard.yaml")
    report = api.run(project)
    by_id = {r["id"]: r for r in report.records}
    fx = {f.id: f for f in project.fixtures}

    # Monthly requests: support has weights 2+1+1 = 4 of 5 total weight, coding 1 of 5.
    assert by_id["reset-password"]["monthly_requests"] == pytest.approx(400_000)
    assert by_id["reset-password-dup"]["monthly_requests"] == pytest.approx(200_000)
    assert by_id["order-status"]["monthly_requests"] == pytest.approx(200_000)
    assert by_id["refactor"]["monthly_requests"] == pytest.approx(200_000)

    # Exact token counts with the tier's tokenizer and chat template.
    n_reset = _count(fx["reset-password"].messages)
    assert by_id["reset-password"]["input_tokens"] == n_reset
    # The duplicate arrives after the original (same suite, file order) and is served from cache.
    # What it saves is what serving it would have cost: with the original's prompt blocks still in
    # the small tier's prefix cache, all whole blocks but the last (the N-1 cap) at the cached rate.
    assert by_id["reset-password-dup"]["cache"]["outcome"] == "exact"
    assert by_id["reset-password-dup"]["cost_usd"] == 0
    reused = (n_reset - 1) // 16 * 16
    assert by_id["reset-password-dup"]["calls"][0]["cached_tokens"] == reused
    assert by_id["reset-password-dup"]["saved_by_cache_usd"] == pytest.approx(
        ((n_reset - reused) * 0.10 + reused * 0.05 + 60 * 0.40) / 1e6
    )

    # Output tokens: expect.output_tokens, else the suite prior (both labelled estimates).
    order = by_id["order-status"]
    assert order["output_tokens"] == 100 and order["calls"][0]["output_source"] == "prior"
    assert by_id["reset-password"]["calls"][0]["output_source"] == "expected"

    # Token-priced small tier.
    n_order = _count(fx["order-status"].messages)
    assert order["cost_usd"] == pytest.approx((n_order * 0.10 + 100 * 0.40) / 1e6)

    # GPU-time large tier: $3/GPU-h x 4 GPUs / 3600 x (prefill + decode seconds) / utilisation.
    n_ref = _count(fx["refactor"].messages)
    refactor = by_id["refactor"]
    assert refactor["served_by"] == "large"
    expected = 3.0 * 4 / 3600 * (n_ref / 20000 + 500 / 2000) / 0.5
    assert refactor["cost_usd"] == pytest.approx(expected)

    monthly = sum(r["monthly_requests"] * r["cost_usd"] for r in report.records)
    assert report.totals["cost_per_month"] == pytest.approx(monthly)
    assert report.tiers["large"]["cost_per_month"] == pytest.approx(200_000 * expected)
    assert report.tiers["small"]["share"] == pytest.approx(0.6)
    assert report.data["cache"]["exact"]["hit_rate"] == pytest.approx(0.2)
    assert report.totals["estimated"] is True  # output tokens are estimates here

    # The counterfactual puts everything on the largest tier with no caches.
    cf = report.data["counterfactual"]
    cf_expected = sum(
        r["monthly_requests"]
        * 3.0
        * 4
        / 3600
        * (
            r["counterfactual"]["input_tokens"] / 20000
            + r["counterfactual"]["output_tokens"] / 2000
        )
        / 0.5
        for r in report.records
    )
    assert cf["cost_per_month"] == pytest.approx(cf_expected)
    assert cf["saving_pct"] == pytest.approx(100 * (cf_expected - monthly) / cf_expected)


def test_report_is_json_with_schema_version_and_input_hashes(project_dir: Path) -> None:
    report = api.run(api.load_project(project_dir / "costguard.yaml"))
    path = report.write(project_dir / "out" / "report.json")
    data = json.loads(path.read_text())
    assert data["schema_version"] == "1.0" and data["complete"] is True
    assert (
        data["inputs"]["config"]["sha256"]
        and data["inputs"]["fixtures"][0]["path"] == "fixtures/support.yaml"
    )
    assert {t["name"] for t in data["stack"]["tiers"]} == {"small", "large"}
    assert all(t["tokenizer_exact"] for t in data["stack"]["tiers"])


def test_template_edit_changes_projection(project_dir: Path) -> None:
    (project_dir / "fixtures" / "t").mkdir()
    (project_dir / "fixtures" / "t" / "sys.j2").write_text("You help {{ name }} customers.")
    (project_dir / "fixtures" / "tpl.yaml").write_text(
        "suite: support\nfixtures:\n  - id: tpl-1\n    messages:\n      - {role: system, template: t/sys.j2}\n"
        "      - {role: user, content: hi}\n    vars: {name: Acme}\n    expect: {output_tokens: 10}\n"
    )
    before = api.run(api.load_project(project_dir / "costguard.yaml"))
    (project_dir / "fixtures" / "t" / "sys.j2").write_text(
        "You help {{ name }} customers. Always answer politely, cite the policy section, and offer a follow-up."
    )
    after = api.run(api.load_project(project_dir / "costguard.yaml"))
    b = {r["id"]: r for r in before.records}["tpl-1"]
    a = {r["id"]: r for r in after.records}["tpl-1"]
    assert a["input_tokens"] > b["input_tokens"]
    assert after.totals["cost_per_month"] > before.totals["cost_per_month"]


def test_arrival_order_is_seeded_and_keeps_file_order_within_a_suite(project_dir: Path) -> None:
    project = api.load_project(project_dir / "costguard.yaml")
    a = arrival_order(project.fixtures, 1)
    assert a == arrival_order(project.fixtures, 1)
    support = [i for i in a if project.fixtures[i].suite == "support"]
    assert support == sorted(support)


def test_suite_shares_from_config_override_weights(project_dir: Path) -> None:
    cfg = (project_dir / "costguard.yaml").read_text()
    cfg = cfg.replace(
        "support: {output_tokens_prior: 100}", "support: {share: 0.5, output_tokens_prior: 100}"
    )
    cfg = cfg.replace(
        "coding: {output_tokens_prior: 400}", "coding: {share: 0.5, output_tokens_prior: 400}"
    )
    (project_dir / "costguard.yaml").write_text(cfg)
    project = api.load_project(project_dir / "costguard.yaml")
    monthly = dict(
        zip(
            [f.id for f in project.fixtures],
            monthly_requests(project.fixtures, project.config),
            strict=True,
        )
    )
    assert monthly["refactor"] == pytest.approx(500_000)
    assert monthly["reset-password"] == pytest.approx(250_000)


def test_cached_tokens_are_billed_once_at_the_cached_rate() -> None:
    price = resolve_price(
        "t",
        PricingConfig(input_per_mtok=1.0, cached_input_per_mtok=0.1, output_per_mtok=2.0),
        gpus=1,
        base_dir=Path("."),
        where="x",
    )
    # 1000 prompt tokens of which 800 cached: 200 at $1/M + 800 at $0.1/M + 10 out at $2/M
    assert price.cost(1000, 800, 10) == pytest.approx((200 * 1.0 + 800 * 0.1 + 10 * 2.0) / 1e6)
    with pytest.raises(ValueError):
        price.cost(10, 11, 0)


def test_litellm_price_table_and_missing_cached_rate_defaults_to_input() -> None:
    price = resolve_price(
        "t",
        PricingConfig(litellm="together_ai/meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo"),
        gpus=1,
        base_dir=Path("."),
        where="x",
    )
    assert price.input_per_token == pytest.approx(1.8e-7)
    assert price.cached_input_per_token == price.input_per_token
    assert "litellm:" in price.source and "2026" in price.source


def test_weighted_percentile() -> None:
    assert weighted_percentile([1, 2, 3], [1, 1, 98], 0.5) == 3
    assert weighted_percentile([1, 2, 3], [98, 1, 1], 0.95) == 1
    assert weighted_percentile([5], [1], 0.99) == 5
