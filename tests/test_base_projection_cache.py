"""Base projections are cached by commit and inputs: a second `diff --base-ref` with the same base
does not project it again, and a changed input (a new commit, a tokenizer file outside the
repository, costguard's own code) projects it anew."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from costguard import api
from costguard.api import core
from costguard.compare import projection_cache
from tests.conftest import (
    STACK_YAML,
    TEMPLATE_V1,
    commit_ticket_project,
    git,
    minilm_dir,
    run_cli,
)


@pytest.fixture
def counted_runs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The roots of the projects `api.run` projected (base projections happen in-process)."""
    roots: list[Path] = []
    real_run = core.run

    def run(project, **options):  # type: ignore[no-untyped-def]
        roots.append(project.root)
        return real_run(project, **options)

    monkeypatch.setattr(core, "run", run)
    return roots


@pytest.fixture
def repo_with_outside_tokenizer(
    project_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A committed project whose tokenizer lives outside the repository (like the HF cache)."""
    outside = tmp_path_factory.mktemp("hf-cache") / "tok"
    shutil.copytree(minilm_dir(), outside)
    (project_dir / "costguard.yaml").write_text(STACK_YAML.format(tok=outside))
    commit_ticket_project(project_dir)
    return project_dir


def _base(repo: Path, ref: str = "HEAD"):  # type: ignore[no-untyped-def]
    return api.load_baseline(base_ref=ref, config=repo / "costguard.yaml")


def test_second_projection_of_the_same_commit_is_read_from_the_cache(
    repo_with_outside_tokenizer: Path, counted_runs: list[Path]
) -> None:
    first = _base(repo_with_outside_tokenizer)
    second = _base(repo_with_outside_tokenizer)
    assert len(counted_runs) == 1
    assert second.source.endswith("projection cached") and not first.source.endswith("cached")
    assert second.report is not None and first.report is not None
    assert json.loads(second.report.to_json()) == json.loads(first.report.to_json())
    entries = list((repo_with_outside_tokenizer / ".costguard/cache/base-projections").glob("*"))
    # the report without its records, the records, and the inputs file that validates both
    assert sorted(p.suffix for p in entries) == [".json", ".json", ".rows"]


def test_a_new_commit_is_projected_again(
    repo_with_outside_tokenizer: Path, counted_runs: list[Path]
) -> None:
    repo = repo_with_outside_tokenizer
    before = _base(repo)
    (repo / "prompts" / "summary.jinja").write_text(TEMPLATE_V1 + "\nMore context, please.")
    git(repo, "commit", "-qam", "longer prompt")
    after = _base(repo)
    assert len(counted_runs) == 2
    assert after.report.totals["cost_per_month"] > before.report.totals["cost_per_month"]  # type: ignore[union-attr]


def test_a_changed_tokenizer_file_outside_the_repo_invalidates_the_entry(
    repo_with_outside_tokenizer: Path, counted_runs: list[Path]
) -> None:
    repo = repo_with_outside_tokenizer
    _base(repo)
    config = next(Path(p) for p in _outside_tokenizer(repo))
    config.write_text(
        config.read_text().replace('"do_lower_case": true', '"do_lower_case": false') + "\n"
    )
    _base(repo)
    assert len(counted_runs) == 2
    _base(repo)  # and the new projection is cached in turn
    assert len(counted_runs) == 2


def _outside_tokenizer(repo: Path) -> list[str]:
    text = (repo / "costguard.yaml").read_text()
    tok = text.split('hf: "', 1)[1].split('"', 1)[0]
    return [str(Path(tok) / "tokenizer_config.json")]


def test_changed_costguard_code_invalidates_the_entry(
    repo_with_outside_tokenizer: Path, counted_runs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = repo_with_outside_tokenizer
    _base(repo)
    monkeypatch.setattr(projection_cache, "code_fingerprint", lambda: "another costguard")
    _base(repo)
    assert len(counted_runs) == 2


def test_an_approximate_tokenizer_projection_is_never_cached(
    repo_with_outside_tokenizer: Path, counted_runs: list[Path]
) -> None:
    repo = repo_with_outside_tokenizer
    text = (repo / "costguard.yaml").read_text()
    text = text.replace(
        "chat_template: chat.jinja}", "chat_template: chat.jinja, approximate_fallback: true}"
    )
    text = text.replace(text.split('hf: "', 1)[1].split('"', 1)[0], str(repo / "no-such-tokenizer"))
    (repo / "costguard.yaml").write_text(text)
    git(repo, "commit", "-qam", "approximate tokens")
    _base(repo)
    _base(repo)
    assert len(counted_runs) == 2


def test_a_damaged_entry_is_projected_again(
    repo_with_outside_tokenizer: Path, counted_runs: list[Path]
) -> None:
    repo = repo_with_outside_tokenizer
    _base(repo)
    (report,) = [
        p for p in (repo / ".costguard/cache/base-projections").glob("*.json")
        if not p.name.endswith(".inputs.json")
    ]  # fmt: skip
    report.write_text(report.read_text()[:100])
    assert _base(repo).report is not None
    assert len(counted_runs) == 2


def test_an_edited_entry_that_still_reads_as_a_report_is_projected_again(
    repo_with_outside_tokenizer: Path, counted_runs: list[Path]
) -> None:
    """An entry is the bytes `put` wrote: an edit that keeps the report valid JSON with
    consistent figures (a record's location) is a miss all the same."""
    repo = repo_with_outside_tokenizer
    first = _base(repo).report
    (report,) = [
        p for p in (repo / ".costguard/cache/base-projections").glob("*.json")
        if not p.name.endswith(".inputs.json")
    ]  # fmt: skip
    rows = report.with_suffix(".rows")
    text = rows.read_text()
    location = first.records[0]["location"]
    assert f'"location":"{location}"' in text
    rows.write_text(text.replace(f'"location":"{location}"', '"location":"elsewhere:9"', 1))
    again = _base(repo).report
    assert len(counted_runs) == 2
    assert again is not None and again.records[0]["location"] == location


def test_diff_base_ref_twice_reports_the_same_and_says_the_base_was_cached(
    repo_with_outside_tokenizer: Path,
) -> None:
    repo = repo_with_outside_tokenizer
    first = run_cli("diff", "--base-ref", "HEAD", "--format", "json", cwd=repo)
    second = run_cli("diff", "--base-ref", "HEAD", "--format", "json", cwd=repo)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    one, two = json.loads(first.stdout), json.loads(second.stdout)
    assert two["base"]["source"].endswith("projection cached")
    for side in (one, two):
        side["base"].pop("source")
        side.pop("created_at", None)
        side["head"].pop("created_at", None)
        side["base"].pop("created_at", None)
    assert one == two


def test_keeps_only_the_newest_entries(tmp_path: Path) -> None:
    from costguard.report.run_report import RunReport

    cache = projection_cache.BaseProjectionCache(tmp_path, keep=2)
    totals = dict.fromkeys(
        ("requests_per_month", "input_tokens_per_month", "cached_tokens_per_month")
        + ("output_tokens_per_month", "cost_per_month"),
        0.0,
    )
    report = RunReport(
        {
            "kind": "run",
            "complete": True,
            "totals": totals,
            "tiers": {},
            "suites": {},
            "records": [],
        }
    )
    for key in ("a", "b", "c"):
        cache.put(key, report, {}, commit=key)
    assert cache.get("a") is None and cache.get("b") is not None and cache.get("c") is not None


def test_an_entry_of_many_chunks_reads_back_row_for_row(tmp_path: Path) -> None:
    """Records spanning several chunks (held in memory, spilled to a file, or a plain list)
    come back as they went in; an inputs file whose chunk layout was edited is a miss."""
    import tempfile

    from costguard.report.rows import ROWS_PER_CHUNK, RecordRows, encode_row
    from costguard.report.run_report import RunReport

    records = [{"id": f"r{i}", "cost_usd": i / 7, "text": "ü" * (i % 5)} for i in range(10_000)]
    assert len(records) > 2 * ROWS_PER_CHUNK
    cache = projection_cache.BaseProjectionCache(tmp_path, keep=10)
    base = {"kind": "run", "complete": True, "totals": {}, "tiers": {}, "suites": {}}
    with tempfile.TemporaryFile() as spill:
        sources = {
            "list": records,
            "rows": RecordRows(encode_row(r) for r in records),
            "file": RecordRows((encode_row(r) for r in records), file=spill),
        }
        for key, held in sources.items():
            cache.put(key, RunReport({**base, "records": held}), {}, commit=key)
            got = cache.get(key)
            assert got is not None and list(got.records) == records, key
            assert list(got.data) == [*base, "records"]  # the records where they were
    inputs = tmp_path / "list.inputs.json"
    recorded = json.loads(inputs.read_text())
    recorded["rows_counts"][0] -= 1
    recorded["rows_counts"][1] += 1
    inputs.write_text(json.dumps(recorded))
    assert cache.get("list") is None
