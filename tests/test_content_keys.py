"""Content keys derived once per fixture are the same keys as before: recordings, token caches and
exact-cache outcomes written by earlier versions keep matching."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costguard.model.fixture_spec import canonical_json
from costguard.model.fixtures import Fixture, Sampling, load_fixtures, tool_fields
from costguard.text.tokenization import TokenCountCache, messages_key

REPO = Path(__file__).resolve().parent.parent


def reference_content_hash(fx: Fixture) -> str:
    """The content hash as costguard 0.x computed it: one json.dumps of the whole payload."""
    payload = {"m": fx.messages, "s": fx.sampling.as_request_params(), "model": fx.model}
    payload.update(tool_fields(fx.tools, fx.tool_choice))
    return hashlib.sha256(
        json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    ).hexdigest()


def test_bundled_fixtures_keep_their_content_hashes_and_token_cache_keys() -> None:
    fixtures = load_fixtures(["fixtures"], root=REPO)
    assert len(fixtures) > 100
    for fx in fixtures:
        assert fx.content_hash == reference_content_hash(fx)
        assert fx.messages_digest == messages_key(fx.messages, fx.tools)


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": text},
        optional={"name": text},
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(
    messages=messages,
    model=st.one_of(st.none(), text),
    temperature=st.one_of(st.none(), st.floats(0, 2)),
    max_tokens=st.one_of(st.none(), st.integers(1, 10_000)),
    tools=st.one_of(
        st.none(),
        st.lists(
            st.fixed_dictionaries(
                {"type": st.just("function"), "function": st.fixed_dictionaries({"name": text})}
            ),
            max_size=2,
        ),
    ),
    tool_choice=st.one_of(st.none(), st.sampled_from(["auto", "none", "required"])),
)
def test_content_hash_matches_one_serialisation_of_the_whole_request(
    messages: list[dict],
    model: str | None,
    temperature: float | None,
    max_tokens: int | None,
    tools: list[dict] | None,
    tool_choice: str | None,
) -> None:
    from costguard.model.fixtures import Expect

    fx = Fixture(
        id="f", suite="s", weight=1.0, messages=messages,
        sampling=Sampling(temperature=temperature, max_tokens=max_tokens),
        expect=Expect(), file="f.yaml", line=1, model=model, tools=tools, tool_choice=tool_choice,
    )  # fmt: skip
    assert fx.content_hash == reference_content_hash(fx)
    assert fx.messages_digest == messages_key(messages, tools)


def test_cold_token_cache_stores_every_prompt_in_key_order(tmp_path: Path) -> None:
    """One sorted transaction: what a later run reads back is what was counted."""
    cache = TokenCountCache(tmp_path)
    rows = [
        (hashlib.sha256(str(i).encode()).hexdigest(), list(range(i % 7 + 1))) for i in range(300)
    ]
    cache.put_many("fp", rows)
    assert cache.get_many("fp", [k for k, _ in rows]) == dict(rows)
    cache.close()


def test_system_prompt_memo_stays_within_its_budget_and_keys_stay_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from costguard.model import fixture_record

    monkeypatch.setattr(fixture_record, "_shared", {})
    monkeypatch.setattr(fixture_record, "_shared_chars", [0])
    monkeypatch.setattr(fixture_record, "SHARED_JSON_CHARS", 100)
    short, long = 'be "brief"\n', "x\u00e9" * 200
    for content in (short, long, short, long):
        messages = [{"role": "system", "content": content}, {"role": "user", "content": "hi"}]
        assert fixture_record._messages_json(messages) == canonical_json(messages)
    assert list(fixture_record._shared) == [short]  # the long one is over budget: not kept
    assert fixture_record._shared_chars[0] <= 100
