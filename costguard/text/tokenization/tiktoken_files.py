"""tiktoken BPE files: by encoding name through `TIKTOKEN_CACHE_DIR` (tiktoken's cache layout) or
by path, with the chat template file they need."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from costguard.model.tokenizer import TokenizerSpec
from costguard.text.tokenization.chat_tokenizer import (
    _APPROX_HINT,
    RENDER_VERSION,
    ChatTokenizer,
    _resolve_path,
    _sha256,
    _TiktokenChatTokenizer,
)
from costguard.text.tokenization.templates import (
    _ChatTemplate,
    _error,
    _one_line,
    _read_template_file,
)


def _openai_public_recipe(name: str) -> dict[str, Any] | None:
    """pat_str, special tokens, blob URL and sha256 of a tiktoken encoding known to the installed
    `tiktoken_ext.openai_public`, read WITHOUT downloading: its constructor runs with the BPE
    loader swapped for a stub that records the URL and expected hash."""
    import types

    try:
        import tiktoken_ext.openai_public as public
    except ImportError:
        return None
    constructors = getattr(public, "ENCODING_CONSTRUCTORS", {})
    if name not in constructors:
        return None
    calls: list[tuple[str, str | None]] = []

    def fake_load(blobpath: str, expected_hash: str | None = None) -> dict:
        calls.append((blobpath, expected_hash))
        return {}

    def fake_data_gym(*args: Any, **kwargs: Any) -> dict:
        raise LookupError("data-gym format")

    scope = dict(vars(public))
    scope["load_tiktoken_bpe"] = fake_load
    scope["data_gym_to_mergeable_bpe_ranks"] = fake_data_gym
    for fn in constructors.values():
        scope[fn.__name__] = types.FunctionType(
            fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__
        )
    try:
        params = scope[constructors[name].__name__]()
    except LookupError:
        return None
    if not calls:
        return None
    url, expected = calls[0]
    return {
        "pat_str": params["pat_str"],
        "special_tokens": dict(params.get("special_tokens", {})),
        "url": url,
        "sha256": expected,
    }


def _known_tiktoken_names() -> list[str]:
    try:
        import tiktoken_ext.openai_public as public
    except ImportError:
        return []
    return sorted(n for n in getattr(public, "ENCODING_CONSTRUCTORS", {}) if n != "gpt2")


def _tiktoken_cache_dir() -> Path:
    # Same order as tiktoken.load.read_file_cached.
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return Path(os.path.expanduser(os.environ["TIKTOKEN_CACHE_DIR"]))
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return Path(os.path.expanduser(os.environ["DATA_GYM_CACHE_DIR"]))
    import tempfile

    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _parse_tiktoken_bpe(data: bytes, path: Path, where: str) -> dict[bytes, int]:
    """The .tiktoken format (`base64-token rank` per line), as `tiktoken.load.load_tiktoken_bpe`
    reads it. Parsed here from bytes we already hold: calling load_tiktoken_bpe on a local path
    would also copy the file into tiktoken's cache directory."""
    import base64
    import binascii

    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error):
            raise _error(
                where,
                f"{path} is not a tiktoken BPE file (line {lineno} is not `base64-token rank`); "
                f"point `tiktoken:` at a .tiktoken file, {_APPROX_HINT}",
            ) from None
    if not ranks:
        raise _error(where, f"{path} is empty; re-download it, {_APPROX_HINT}")
    return ranks


def _load_tiktoken(spec: TokenizerSpec, base_dir: Path, where: str) -> ChatTokenizer:
    value = spec.tiktoken or ""
    path = _resolve_path(value, base_dir)
    looks_like_path = (
        "/" in value or "\\" in value or value.endswith((".tiktoken", ".model")) or path.exists()
    )
    if looks_like_path:
        if not path.is_file():
            raise _error(
                where,
                f"tiktoken BPE file not found at {path}; fix the `tiktoken:` path, or name an "
                f"encoding ({', '.join(_known_tiktoken_names())}) found in TIKTOKEN_CACHE_DIR, "
                f"{_APPROX_HINT}",
            )
        name = path.name.split(".")[0]
        recipe = _openai_public_recipe(name)
        bpe_file = path
    else:
        name = value
        recipe = _openai_public_recipe(name)
        if recipe is None:
            raise _error(
                where,
                f"unknown tiktoken encoding {name!r} (known: {', '.join(_known_tiktoken_names())}); "
                f"use one of those or a path to a .tiktoken file, {_APPROX_HINT}",
            )
        cache_dir = _tiktoken_cache_dir()
        cache_key = hashlib.sha1(recipe["url"].encode()).hexdigest()
        bpe_file = cache_dir / cache_key
        if not bpe_file.is_file():
            raise _error(
                where,
                f"tiktoken encoding {name!r} is not in the tiktoken cache ({bpe_file} not found); "
                f"set TIKTOKEN_CACHE_DIR to a directory holding the file {cache_key} (the "
                f"download of {recipe['url']}), or download that URL and point `tiktoken:` at the "
                f"file, {_APPROX_HINT}",
            )
    try:
        data = bpe_file.read_bytes()
    except OSError as exc:
        raise _error(where, f"cannot read {bpe_file}: {_one_line(exc)}") from None
    if recipe is not None and recipe.get("sha256"):
        actual = hashlib.sha256(data).hexdigest()
        if actual != recipe["sha256"]:
            raise _error(
                where,
                f"{bpe_file} does not match the published {name} file (sha256 {actual[:12]}…, "
                f"expected {recipe['sha256'][:12]}…): it is corrupt or a different encoding; "
                f"re-download {recipe['url']}, or rename the file if it is a custom encoding",
            )
    ranks = _parse_tiktoken_bpe(data, bpe_file, where)

    if recipe is not None:
        pat_str = recipe["pat_str"]
        specials = dict(recipe["special_tokens"])
        pat_label = name
    else:
        cl100k = _openai_public_recipe("cl100k_base")
        if cl100k is None:  # pragma: no cover - tiktoken always ships openai_public
            raise _error(where, "tiktoken_ext.openai_public is missing; reinstall tiktoken")
        pat_str = cl100k["pat_str"]
        specials = {}
        pat_label = "cl100k_base split pattern"
    specials.update(spec.special_tokens or {})

    tpl_path = _resolve_path(spec.chat_template or "", base_dir)
    source = _read_template_file(tpl_path, where=where)
    variables: dict[str, Any] = {"bos_token": "", "eos_token": ""}
    template = _ChatTemplate(source, name=str(tpl_path), where=where, variables=variables)

    try:
        import tiktoken

        encoding = tiktoken.Encoding(
            name=name, pat_str=pat_str, mergeable_ranks=ranks, special_tokens=specials
        )
    except Exception as exc:
        raise _error(
            where, f"cannot build tiktoken encoding from {bpe_file}: {_one_line(exc)}"
        ) from None

    fingerprint = _sha256(
        "tiktoken",
        RENDER_VERSION,
        data,
        pat_str,
        json.dumps(specials, sort_keys=True),
        source,
    )
    loaded_tiktoken = _TiktokenChatTokenizer(
        encoding,
        template=template,
        fingerprint=fingerprint,
        description=f"tiktoken:{name} ({bpe_file}, {pat_label}) + template {tpl_path}",
    )
    loaded_tiktoken.sources = (bpe_file, tpl_path)
    return loaded_tiktoken
