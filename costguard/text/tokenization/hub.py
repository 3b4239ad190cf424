"""Hugging Face tokenizers: from a directory, a `tokenizer.json`, or the local HF cache by model id
(fetched only on request, by `fetch_hub_tokenizer`)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from costguard.model.tokenizer import TokenizerSpec
from costguard.text.tokenization.chat_tokenizer import (
    _APPROX_HINT,
    RENDER_VERSION,
    ChatTokenizer,
    _HFChatTokenizer,
    _resolve_path,
    _sha256,
)
from costguard.text.tokenization.templates import (
    _ChatTemplate,
    _error,
    _one_line,
    _pick_named_template,
    _read_template_file,
    _template_variables,
    _token_content,
)


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved as huggingface_hub does (where models and tokenizers land)."""
    env = os.environ
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return Path(os.path.expanduser(env[var]))
    if env.get("HF_HOME"):
        return Path(os.path.expanduser(env["HF_HOME"])) / "hub"
    base = (
        Path(os.path.expanduser(env["XDG_CACHE_HOME"]))
        if env.get("XDG_CACHE_HOME")
        else (Path.home() / ".cache")
    )
    return base / "huggingface" / "hub"


_MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?(@[\w.\-/]+)?$")


def _find_in_hf_cache(model_id: str) -> tuple[Path | None, Path]:
    """(snapshot dir holding tokenizer.json or None, the repo dir that was looked at)."""
    repo_id, _, revision = model_id.partition("@")
    repo_dir = hf_hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo_dir / "snapshots"
    candidates: list[Path] = []
    rev = revision or "main"
    ref = repo_dir / "refs" / rev
    if ref.is_file():
        candidates.append(snapshots / ref.read_text().strip())
    candidates.append(snapshots / rev)  # a commit hash given as the revision
    if not revision and snapshots.is_dir():
        others = [p for p in snapshots.iterdir() if (p / "tokenizer.json").is_file()]
        candidates += sorted(others, key=lambda p: p.stat().st_mtime, reverse=True)
    for cand in candidates:
        if (cand / "tokenizer.json").is_file():
            return cand, repo_dir
    return None, repo_dir


HUB_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)
"""What `_load_hf` reads from a model repo; only tokenizer.json is required."""


def hub_tokenizer_id(spec: TokenizerSpec, base_dir: Path) -> str | None:
    """The hub model id (`org/name[@rev]`) an `hf:` tokenizer is read from, None for local files.

    Same rule as the loader: a value that is not an existing path but looks like a model id is
    looked up in the local HF cache. Lets CI pre-fetch exactly what the projection will read.
    """
    if spec.hf is None:
        return None
    path = _resolve_path(spec.hf, Path(base_dir))
    if path.exists() or not _MODEL_ID_RE.match(spec.hf):
        return None
    return spec.hf


def hub_tokenizer_cached(model_id: str) -> bool:
    return _find_in_hf_cache(model_id)[0] is not None


def fetch_hub_tokenizer(model_id: str, *, where: str = "tokenizer") -> Path:
    """Download a model's tokenizer files (not its weights) into the HF cache; returns the snapshot.

    For machines with network only (CI before an offline projection): the projection itself
    never downloads. A gated repo (Llama) needs HF_TOKEN with access granted on the hub.
    """
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import (
            EntryNotFoundError,
            GatedRepoError,
            RepositoryNotFoundError,
        )
    except ImportError:
        raise _error(
            where, "huggingface_hub is not installed: `pip install huggingface_hub`"
        ) from None
    repo_id, _, revision = model_id.partition("@")
    snapshot: Path | None = None
    for name in HUB_TOKENIZER_FILES:
        try:
            got = hf_hub_download(
                repo_id, name, revision=revision or None, cache_dir=hf_hub_cache_dir()
            )
        except EntryNotFoundError:
            if name == "tokenizer.json":
                raise _error(
                    where,
                    f"model {repo_id!r} has no tokenizer.json on the hub: costguard reads fast "
                    "tokenizers only; convert it locally and point `hf:` at the directory",
                ) from None
            continue
        except GatedRepoError:
            raise _error(
                where,
                f"model {repo_id!r} is gated on the Hugging Face hub: accept its licence there "
                "and set HF_TOKEN to a token with access",
            ) from None
        except RepositoryNotFoundError:
            raise _error(
                where,
                f"model {repo_id!r} not found on the Hugging Face hub (or private: set HF_TOKEN)",
            ) from None
        except Exception as exc:  # network errors, HF_HUB_OFFLINE, ... (many types)
            raise _error(
                where, f"could not download {name} of {repo_id!r}: {_one_line(exc)}"
            ) from None
        snapshot = Path(got).parent
    assert snapshot is not None
    return snapshot


def _hf_fix(model: str) -> str:
    return (
        f"download it with `huggingface-cli download {model} tokenizer.json "
        "tokenizer_config.json --local-dir DIR` on a machine with network and point `hf:` at "
        f"DIR, {_APPROX_HINT}"
    )


def _load_hf(spec: TokenizerSpec, base_dir: Path, where: str) -> ChatTokenizer:
    value = spec.hf or ""
    path = _resolve_path(value, base_dir)
    model_for_hint = value if _MODEL_ID_RE.match(value) and "/" in value else "MODEL"
    if path.is_dir():
        tok_file = path / "tokenizer.json"
        if not tok_file.is_file():
            others = [
                n for n in ("tokenizer.model", "vocab.json", "vocab.txt") if (path / n).exists()
            ]
            extra = (
                f" (found {', '.join(others)}: costguard reads fast tokenizers only; convert with "
                "`AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)` from transformers)"
                if others
                else ""
            )
            raise _error(
                where, f"tokenizer.json not found in {path}{extra}; {_hf_fix(model_for_hint)}"
            )
    elif path.is_file():
        tok_file = path
    elif _MODEL_ID_RE.match(value):
        snapshot, repo_dir = _find_in_hf_cache(value)
        if snapshot is None:
            raise _error(
                where,
                f"tokenizer.json not found at {path} nor for model {value!r} in the local HF cache "
                f"({repo_dir}; set HF_HUB_CACHE or HF_HOME to use another cache); "
                f"{_hf_fix(value.partition('@')[0])}",
            )
        tok_file = snapshot / "tokenizer.json"
    else:
        raise _error(where, f"tokenizer.json not found at {path}; {_hf_fix(model_for_hint)}")

    tok_dir = tok_file.parent
    try:
        tok_bytes = tok_file.read_bytes()
    except OSError as exc:
        raise _error(where, f"cannot read {tok_file}: {_one_line(exc)}") from None

    config: dict[str, Any] = {}
    config_file = tok_dir / "tokenizer_config.json"
    if config_file.is_file():
        try:
            loaded = json.loads(config_file.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _error(
                where, f"cannot parse {config_file}: {_one_line(exc)}; re-download it"
            ) from None
        if isinstance(loaded, dict):
            config = loaded
    special_map = tok_dir / "special_tokens_map.json"
    if special_map.is_file():
        try:
            loaded = json.loads(special_map.read_text(encoding="utf-8-sig"))
            if isinstance(loaded, dict):
                for k, v in loaded.items():
                    config.setdefault(k, v)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            pass

    # Chat template: the spec's override, else chat_template.jinja (transformers prefers it),
    # else tokenizer_config.json's chat_template.
    if spec.chat_template:
        tpl_path = _resolve_path(spec.chat_template, base_dir)
        source, tpl_name = _read_template_file(tpl_path, where=where), str(tpl_path)
    elif (tok_dir / "chat_template.jinja").is_file():
        tpl_path = tok_dir / "chat_template.jinja"
        source, tpl_name = _read_template_file(tpl_path, where=where), str(tpl_path)
    elif config.get("chat_template") is not None:
        source = _pick_named_template(config["chat_template"], origin=str(config_file), where=where)
        tpl_name = f"{config_file} (chat_template)"
    else:
        raise _error(
            where,
            f"no chat template for {tok_file}: {config_file.name} has no `chat_template` and there "
            "is no chat_template.jinja beside it; set `chat_template:` to the model's template file",
        )

    variables = _template_variables(config)
    template = _ChatTemplate(source, name=tpl_name, where=where, variables=variables)

    try:
        from tokenizers import AddedToken, Tokenizer

        tokenizer = Tokenizer.from_str(tok_bytes.decode("utf-8"))
    except Exception as exc:
        raise _error(
            where,
            f"cannot load {tok_file}: {_one_line(exc)}; re-download it (or `pip install -U "
            f"tokenizers` if it comes from a newer model), {_APPROX_HINT}",
        ) from None
    # transformers turns off the truncation/padding a tokenizer.json may carry (e.g. MiniLM:
    # truncate and pad to 128) unless asked for; vLLM never asks for them.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    # Added tokens declared only in tokenizer_config.json (transformers adds them on load).
    extra_tokens: list[Any] = []
    decoder = config.get("added_tokens_decoder")
    if isinstance(decoder, Mapping):
        for _id, tok in sorted(
            decoder.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else 0
        ):
            content = _token_content(tok)
            if content is None or tokenizer.token_to_id(content) is not None:
                continue
            t = tok if isinstance(tok, Mapping) else {}
            extra_tokens.append(
                AddedToken(
                    content,
                    single_word=bool(t.get("single_word", False)),
                    lstrip=bool(t.get("lstrip", False)),
                    rstrip=bool(t.get("rstrip", False)),
                    normalized=bool(t.get("normalized", not t.get("special", True))),
                    special=bool(t.get("special", True)),
                )
            )
    if extra_tokens:
        tokenizer.add_tokens(extra_tokens)

    fingerprint = _sha256(
        "hf",
        RENDER_VERSION,
        tok_bytes,
        source,
        json.dumps(variables, sort_keys=True),
        json.dumps([t.content for t in extra_tokens]),
    )
    tpl_label = tpl_name if spec.chat_template else Path(tpl_name.split(" (")[0]).name
    loaded_hf = _HFChatTokenizer(
        tokenizer,
        template=template,
        fingerprint=fingerprint,
        description=f"hf:{tok_file} + template {tpl_label}",
    )
    read = (tok_file, config_file, special_map, Path(tpl_name.split(" (")[0]))
    loaded_hf.sources = tuple(dict.fromkeys(p for p in read if p.is_file()))
    return loaded_hf
