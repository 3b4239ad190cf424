"""Result caches in front of the router: the PII guard, the exact cache (normalisation, TTL,
temperature gate), arrival times, and the deterministic expectation check used to judge hits."""

from __future__ import annotations

from pathlib import Path

import pytest

from costguard import api
from costguard.engine.caches.exact import ExactResultCache, normalize_text
from costguard.engine.caches.pii import PiiGuard, luhn_valid
from costguard.engine.quality.assess import passes_expectations
from costguard.engine.traffic import arrival_times
from costguard.errors import ConfigError
from costguard.model.config import load_stack
from costguard.model.fixtures import Expect, Fixture, Sampling
from tests.conftest import run_cli, write


def _fixture(
    fid: str, user: str, *, temperature: float | None = 0.0, system: str = "Be brief."
) -> Fixture:
    return Fixture(
        id=fid,
        suite="s",
        weight=1.0,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
        sampling=Sampling(temperature=temperature),
        expect=Expect(),
        file="f.yaml",
        line=1,
    )


# -- PII guard ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("write to jordan.reyes@example.com please", ["email"]),
        ("call (775) 555-0143 after 3pm", ["phone"]),
        ("cell 604.555.0187", ["phone"]),
        ("1 775 555 0199", ["phone"]),
        ("+1-416-555-0126", ["phone"]),
        ("London office +44 20 7946 0958", ["phone"]),
        ("card 4111 1111 1111 1111 exp 12/29", ["card"]),
        ("card 4111-1111-1111-1111", ["card"]),
        ("4111111111111111", ["card"]),
        ("mail a@b.io or ring 416-555-0126", ["email", "phone"]),
    ],
)
def test_pii_detectors_find_personal_data(text: str, found: list[str]) -> None:
    assert PiiGuard().scan_text(text) == found


@pytest.mark.parametrize(
    "text",
    [
        "order CW-5501934 arrived",  # an order number
        "delivered on 2024-06-12",  # a date
        "tracking 10123456784",  # 11 digits without separators
        "4111 1111 1111 1112",  # 16 digits failing the Luhn check
        "returns within 30 days, $6.95 label fee",
    ],
)
def test_pii_detectors_leave_ordinary_numbers_alone(text: str) -> None:
    assert PiiGuard().scan_text(text) == []


def test_luhn_check_by_hand() -> None:
    # 79927398713 is the textbook valid number; changing its check digit breaks it.
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")


def test_custom_detectors_allow_list_and_roles() -> None:
    guard = PiiGuard(custom={"gift_card": r"\b6006(?:[ -]?\d{4}){3}\b"}, allow=["support@acme.com"])
    assert guard.scan_text("gift card 6006 4912 3388 1029") == ["gift_card"]
    assert (
        guard.scan_text("write to support@acme.com") == []
    )  # the company's own address is not PII
    assert guard.scan_text("write to support@acme.com or me@home.net") == ["email"]
    # Only user messages are scanned by default: a system prompt quoting a support line is fine.
    fx = _fixture("f", "hello", system="Escalate to 1-888-555-0142 or help@acme.com.")
    assert guard.scan(fx) == []
    assert PiiGuard(roles=("system", "user")).scan(fx) == ["email", "phone"]


# -- exact cache ----------------------------------------------------------------------------


def test_normalisation_steps() -> None:
    assert normalize_text("  Hi \n there ", ["whitespace"]) == "Hi there"
    assert normalize_text("  Hi \n there ", ["strip"]) == "Hi \n there"
    assert normalize_text("ＡＢＣ Hi", ["unicode", "case"]) == "abc hi"
    cache = ExactResultCache(normalize=["whitespace"])
    assert cache.lookup(_fixture("a", "Where is my order?"), index=0).outcome == "miss"
    assert cache.lookup(_fixture("b", "  Where is  my order? "), index=1).outcome == "exact"
    assert cache.lookup(_fixture("c", "where is my order?"), index=2).outcome == "miss"  # case kept
    strict = ExactResultCache(normalize=[])
    strict.lookup(_fixture("a", "Where is my order?"))
    assert strict.lookup(_fixture("b", "Where is my order? ")).outcome == "miss"


def test_exact_cache_ttl_against_traffic_time() -> None:
    cache = ExactResultCache(ttl_s=60)
    assert cache.lookup(_fixture("a", "q"), index=0, now=0.0).outcome == "miss"
    hit = cache.lookup(_fixture("b", "q"), index=1, now=60.0)
    assert (hit.outcome, hit.source_index) == ("exact", 0)
    expired = cache.lookup(_fixture("c", "q"), index=2, now=60.5)
    assert expired.outcome == "miss" and "expired" in (expired.detail or "") and cache.expired == 1
    # The request that found the entry expired refreshed it.
    again = cache.lookup(_fixture("d", "q"), index=3, now=100.0)
    assert (again.outcome, again.source_index) == ("exact", 2)


def test_temperature_gate() -> None:
    cache = ExactResultCache(max_temperature=0.1)
    assert cache.lookup(_fixture("a", "q", temperature=None)).outcome == "bypass"
    assert cache.lookup(_fixture("b", "q", temperature=0.7)).detail == "temperature 0.7 > 0.1"
    assert cache.lookup(_fixture("c", "q", temperature=0.1)).outcome == "miss"


def test_arrival_times_are_seeded_poisson_at_the_traffic_rate(project_dir: Path) -> None:
    config = load_stack(project_dir / "costguard.yaml").config
    config.traffic.arrival_rate_per_s = 2.0
    times = arrival_times(4000, config)
    assert times == arrival_times(4000, config)
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    assert times[-1] / len(times) == pytest.approx(0.5, rel=0.05)  # mean gap 1/rate
    config.traffic.arrival_rate_per_s = None  # default: requests_per_month over an average month
    assert arrival_times(4000, config)[-1] / 4000 == pytest.approx(
        30.4375 * 86400 / 1_000_000, rel=0.05
    )


# -- the layers in a run --------------------------------------------------------------------

CACHE_FIXTURES = """\
suite: support
defaults:
  sampling: {temperature: 0}
  expect: {output_tokens: 20}
fixtures:
  - id: hours
    messages: [{role: user, content: "What are your opening hours?"}]
  - id: hours-again
    messages: [{role: user, content: "What are your   opening hours?"}]
  - id: contact-me
    messages: [{role: user, content: "Call me back at (775) 555-0143 about order 12."}]
  - id: contact-me-again
    messages: [{role: user, content: "Call me back at (775) 555-0143 about order 12."}]
  - id: sampled
    sampling: {temperature: 0.8}
    messages: [{role: user, content: "Write me a poem about tents."}]
"""


def _cache_project(project_dir: Path, caches: str) -> Path:
    cfg = project_dir / "costguard.yaml"
    cfg.write_text(cfg.read_text() + caches)
    write(project_dir / "fixtures" / "support.yaml", CACHE_FIXTURES)
    return cfg


def test_pii_requests_bypass_the_caches_and_reports_never_hold_the_text(project_dir: Path) -> None:
    cfg = _cache_project(project_dir, "caches:\n  exact: {max_temperature: 0.1}\n")
    report = api.run(api.load_project(cfg))
    by_id = {r["id"]: r for r in report.records}
    assert by_id["hours-again"]["cache"]["outcome"] == "exact"  # whitespace normalised
    for fid in ("contact-me", "contact-me-again"):  # identical, but never cached
        assert by_id[fid]["cache"] == {"outcome": "bypass", "detail": "PII: phone"}
        assert by_id[fid]["extra"]["pii"] == ["phone"]
    assert by_id["sampled"]["cache"]["outcome"] == "bypass"
    bypass = report.data["cache"]["bypass"]
    per_request = report.totals["requests_per_month"] / 5
    assert bypass["reasons"] == pytest.approx({"pii": 2 * per_request, "temperature": per_request})
    assert bypass["pii"]["requests_per_month"] == pytest.approx({"phone": 2 * per_request})
    assert "555-0143" not in report.to_json()  # the detector's name, never the matched text


def test_ttl_expires_entries_at_a_slow_arrival_rate(project_dir: Path) -> None:
    cfg = project_dir / "costguard.yaml"
    cfg.write_text(cfg.read_text().replace("seed: 3}", "seed: 3, arrival_rate_per_s: 0.001}"))
    _cache_project(project_dir, "caches:\n  exact: {ttl_s: 1}\n")
    report = api.run(api.load_project(cfg))
    again = {r["id"]: r for r in report.records}["hours-again"]
    assert again["cache"]["outcome"] == "miss" and again["cache"]["detail"].startswith("expired")
    assert report.data["cache"]["exact"]["expired_lookups"] == 1
    assert again["arrival_s"] > 1


def test_pii_guard_can_be_switched_off(project_dir: Path) -> None:
    cfg = _cache_project(project_dir, "caches:\n  pii: {enabled: false}\n")
    by_id = {r["id"]: r for r in api.run(api.load_project(cfg)).records}
    assert by_id["contact-me-again"]["cache"]["outcome"] == "exact"


@pytest.mark.parametrize(
    ("caches", "message"),
    [
        ("caches:\n  pii: {custom: {bad: '(unclosed'}}\n", "invalid regular expression"),
        ("caches:\n  pii: {detectors: [ssn]}\n", "caches.pii.detectors"),
        ("caches:\n  exact: {normalize: [lowercase]}\n", "caches.exact.normalize"),
    ],
)
def test_bad_cache_config_is_one_located_line(project_dir: Path, caches: str, message: str) -> None:
    cfg = _cache_project(project_dir, caches)
    with pytest.raises(ConfigError) as err:
        load_stack(cfg)
    assert message in str(err.value) and "costguard.yaml:" in str(err.value)
    proc = run_cli("run", cwd=project_dir)
    assert (
        proc.returncode == 2
        and "Traceback" not in proc.stderr
        and len(proc.stderr.strip().splitlines()) == 1
    )


# -- judging a cached answer ----------------------------------------------------------------


def test_passes_expectations_minimal_checks() -> None:
    expect = Expect.model_validate(
        {
            "reference": "Yes, within 30 days for a full refund.",
            "assertions": [
                {"icontains": "full refund"},
                {"contains": "30 days"},
                {"not_contains": "store credit"},
            ],
        }
    )
    assert (
        passes_expectations(expect, "Yes,  within 30 days for a full refund.") is True
    )  # the reference
    assert passes_expectations(expect, "A Full Refund is possible within 30 days.") is True
    assert (
        passes_expectations(expect, "After 30 days you get store credit, not a full refund.")
        is False
    )
    assert (
        passes_expectations(
            Expect.model_validate({"assertions": [{"regex": r"\bCW-\d{7}\b"}]}), "CW-1234567"
        )
        is True
    )
    assert (
        passes_expectations(Expect.model_validate({"assertions": [{"json": True}]}), "{not json")
        is False
    )
    # Nothing deterministic to check, and a different text than the reference: unjudged, not a guess.
    only_judge = Expect.model_validate(
        {"reference": "a", "assertions": [{"judge": {"rubric": "polite"}}]}
    )
    assert passes_expectations(only_judge, "b") is None
    assert passes_expectations(Expect(), "anything") is None


def _numbers_reference(text: str, phone: bool, card: bool) -> list[str]:
    """The PII number scan as first written: every run of `[+(]?\\d[\\d\\s().-]{6,}\\d`."""
    import re

    from costguard.engine.caches.pii import _CARD, _PHONE

    found_phone = found_card = False
    for run in re.finditer(r"[+(]?\d[\d\s().-]{6,}\d", text):
        start, end = run.span()
        if phone and not found_phone:
            found_phone = _PHONE.search(text, start, min(end + 1, len(text))) is not None
        if card and not found_card:
            for match in _CARD.finditer(text, start, min(end + 1, len(text))):
                if luhn_valid(match.group().replace(" ", "").replace("-", "")):
                    found_card = True
                    break
        if found_phone == phone and found_card == card:
            break
    return [name for name, hit in (("phone", found_phone), ("card", found_card)) if hit]


def test_the_number_scan_finds_what_the_plain_pattern_finds() -> None:
    """The scan's faster form (digit-first runs, a digit-count shortcut) matches the plain one."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from costguard.engine.caches.pii import _numbers

    pieces = st.sampled_from(
        ["+", "(", ")", " ", "-", ".", "1", "4", "0", "555", "4111 1111 1111 1111", "a", "\n",
         "+1-416-555-0126", "(775) 555-0143", "+44 20 7946 0958", "x+", "9(", "+1 2 34 56"]
    )  # fmt: skip

    @settings(max_examples=800, deadline=None)
    @given(st.lists(pieces, max_size=40).map("".join), st.booleans(), st.booleans())
    def check(text: str, phone: bool, card: bool) -> None:
        assert _numbers(text, phone, card) == _numbers_reference(text, phone, card)

    check()


def _exact_key_reference(fixture: Fixture, normalize: tuple[str, ...]) -> bytes:
    """The exact-cache key as first written (no memo, no shortcuts)."""
    import hashlib

    from costguard.model.fixtures import canonical_json, message_text, tool_fields

    parts = [fixture.model or "", fixture.sampling_json]
    for m in fixture.messages:
        parts.append(m["role"].strip().lower())
        parts.append(normalize_text(message_text(m), normalize))
        extras = {k: m[k] for k in ("tool_calls", "tool_call_id", "name") if k in m}
        parts.append(canonical_json(extras) if extras else "")
    tools = tool_fields(fixture.tools, fixture.tool_choice)
    parts.append(canonical_json(tools) if tools else "")
    framed = "".join(f"{len(part)}:{part}" for part in parts)
    return hashlib.sha256(framed.encode("utf-8", "surrogatepass")).digest()


def test_exact_keys_with_the_memo_are_the_plain_keys(tmp_path: Path) -> None:
    """Normalised system prompts and documents are remembered across requests; the keys are
    those computed from scratch, for plain, multi-part, named and tool-calling messages."""
    import json

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from costguard.engine.caches.exact import exact_key
    from costguard.model.fixtures import load_fixture_file

    text = st.sampled_from(["Hi", " Hi  there ", "HI THERE", "Ünï  code", "x" * 1100, ""])
    content = st.one_of(
        text, st.lists(st.builds(lambda t: {"type": "text", "text": t}, text), max_size=2)
    )
    message = st.one_of(
        st.builds(lambda r, c: {"role": r, "content": c}, st.sampled_from(["system", "user", "developer"]), content),
        st.builds(lambda c: {"role": "user", "content": c, "name": "ann"}, content),
        st.just({"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
        st.just({"role": "tool", "tool_call_id": "c1", "content": "42"}),
    )  # fmt: skip
    steps = st.sampled_from([(), ("whitespace",), ("strip", "case"), ("unicode", "whitespace")])
    counter = iter(range(10**9))

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.lists(message, min_size=1, max_size=4), min_size=1, max_size=5), steps)
    def check(conversations: list[list[dict]], normalize: tuple[str, ...]) -> None:
        path = tmp_path / f"f{next(counter)}.jsonl"
        path.write_text(
            "".join(
                json.dumps({"id": f"c{i}", "messages": conv, "sampling": {"temperature": 0}}) + "\n"
                for i, conv in enumerate(conversations)
            )
        )
        memo: dict[str, str] = {}
        for fx in load_fixture_file(path):
            want = _exact_key_reference(fx, normalize)
            assert exact_key(fx, normalize, memo) == want
            assert exact_key(fx, normalize, memo) == want  # and again, from the memo
            assert exact_key(fx, normalize) == want

    check()
