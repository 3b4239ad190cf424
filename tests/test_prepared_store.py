"""Prepared result-cache passes kept across runs (`engine.prepared_store`): a run with unchanged
fixtures and cache/traffic settings reads the pass an earlier run prepared and reports exactly
what preparing it gives; anything the pass depends on changes its key; a damaged one is a miss."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from costguard import api
from costguard.engine import prepared_store, result_caches
from costguard.engine.prepared_store import PreparedStore, pass_key


def _report(project_dir: Path) -> dict[str, Any]:
    report = api.run(api.load_project(project_dir / "costguard.yaml"))
    data = json.loads(report.to_json())
    for key in ("created_at", "timing", "stages"):
        data.pop(key, None)
    return data


def _kept(project_dir: Path) -> list[Path]:
    return sorted((project_dir / ".costguard" / "cache" / "passes").glob("*.pass"))


def _refuse_to_prepare(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any) -> Any:
        raise AssertionError("prepared although a kept pass exists")

    monkeypatch.setattr(result_caches.ResultCaches, "prepare", refuse)


def test_a_kept_pass_gives_the_report_a_prepared_one_gives(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared = _report(project_dir)
    (kept,) = _kept(project_dir)
    with monkeypatch.context() as m:
        _refuse_to_prepare(m)
        assert _report(project_dir) == prepared
    assert _kept(project_dir) == [kept]
    # A PR that edits the router (not the fixtures, caches or traffic) still reads it.
    config = project_dir / "costguard.yaml"
    routed = "{tier: large, suites: [coding]}"
    assert routed in config.read_text()
    config.write_text(config.read_text().replace(routed, "{tier: small, suites: [coding]}"))
    with monkeypatch.context() as m:
        _refuse_to_prepare(m)
        _report(project_dir)


def _key(project_dir: Path) -> str | None:
    project = api.load_project(project_dir / "costguard.yaml")
    return pass_key(project.config, project.fixtures)


@pytest.mark.parametrize(
    ("path", "old", "new"),
    [
        ("fixtures/support.yaml", "weight: 2", "weight: 3"),  # a weight
        ("fixtures/support.yaml", "suite: coding", "suite: support"),  # a suite
        ("fixtures/support.yaml", "reset my password?", "reset my password!"),  # a message
        ("fixtures/support.yaml", "{temperature: 0}", "{temperature: 0.5}"),  # sampling
        ("costguard.yaml", "seed: 3", "seed: 4"),  # the traffic's seed
        ("costguard.yaml", "\nsuites:", "\ncaches: {exact: {ttl_s: 60}}\nsuites:"),  # caches
    ],
)
def test_what_the_pass_depends_on_changes_its_key(
    project_dir: Path, path: str, old: str, new: str
) -> None:
    before = _key(project_dir)
    file = project_dir / path
    text = file.read_text()
    assert old in text
    file.write_text(text.replace(old, new, 1))
    after = _key(project_dir)
    assert before is not None and after is not None and after != before


def test_the_code_that_prepares_a_pass_is_in_its_key() -> None:
    package = Path(prepared_store.__file__).resolve().parent.parent
    assert all((package / name).is_file() for name in prepared_store.CODE_FILES)
    assert {"engine/result_caches.py", "engine/caches/exact.py", "engine/caches/pii.py"} <= set(
        prepared_store.CODE_FILES
    )


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],
        lambda b: b"\x00" * len(b),
        lambda b: b"",
    ],
)
def test_a_damaged_kept_pass_is_a_miss(project_dir: Path, damage: Any) -> None:
    prepared = _report(project_dir)
    (kept,) = _kept(project_dir)
    kept.write_bytes(damage(kept.read_bytes()))
    assert _report(project_dir) == prepared


def test_a_kept_pass_of_another_key_or_size_is_not_read(tmp_path: Path) -> None:
    store = PreparedStore(tmp_path)
    fields = ([1, 0], [0.0, 1.5], {1: ["email"]}, [b"k" * 32, None])
    store.save("a" * 64, fields)
    assert store.load("a" * 64, 2) == fields
    assert store.load("a" * 64, 3) is None  # another number of fixtures
    (tmp_path / ("a" * 40 + ".pass")).rename(tmp_path / ("b" * 40 + ".pass"))
    assert store.load("b" * 64, 2) is None  # the record names its own key


def test_at_most_keep_passes_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepared_store, "KEEP", 2)
    store = PreparedStore(tmp_path)
    for c in "abc":
        store.save(c * 64, ([0], [0.0], {}, [None]))
    assert len(list(tmp_path.glob("*.pass"))) == 2
