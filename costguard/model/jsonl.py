"""JSONL inputs (fixture files, request logs): their lines, one JSON object a line, validated
with errors at the line: `file:line: key: message`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from costguard.errors import ConfigError
from costguard.model.yamlio import read_text, validate

M = TypeVar("M", bound=BaseModel)


def parse_json_line(text: str, *, file: str | Path, line: int) -> Any:
    try:
        if text.startswith("\ufeff"):  # what json.loads says (JSONDecoder.decode does not check)
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _JSON_LINE.decode(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"invalid JSON: {exc.msg} (column {exc.colno})", file=file, line=line
        ) from None
    except ValueError as exc:  # NaN / Infinity, an integer too long to convert
        raise ConfigError(f"invalid JSON: {exc}", file=file, line=line) from None
    except RecursionError:
        raise ConfigError("invalid JSON: nested too deeply", file=file, line=line) from None


def _no_json_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


# json.loads(text, parse_constant=...) makes a decoder a call; this one is made once.
_JSON_LINE = json.JSONDecoder(parse_constant=_no_json_constant)


def validate_json_line(
    model: type[M], data: Any, *, file: str | Path, line: int | None, at: str = ""
) -> M:
    """`validate` for an object read from one JSON line (`at`: where it sits in that line's
    object, e.g. "messages[2]"): an error points at that line and key."""
    try:
        return validate(model, data, file=file)
    except ConfigError as exc:
        key = exc.key
        if at:
            key = at + ("" if not key else key if key.startswith("[") else "." + key)
        raise ConfigError(exc.message, file=file, line=line, key=key) from None


def text_lines(
    path: Path, *, block: int = 1 << 22, hasher: Any = None
) -> Iterator[tuple[int, str]]:
    """(line number, line) of each line of a UTF-8 text input, read a block at a time: the lines,
    numbers and errors of `read_text(path).splitlines()`, without holding the whole file (a
    production fixture set is hundreds of megabytes) and a second copy of it in lines.
    `hasher` (a hashlib object), when given, is updated with the bytes as they are read."""
    n = 0
    try:
        with path.open("rb") as f:
            decode = "utf-8-sig"  # a byte order mark only at the start, like read_text
            rest = b""
            while True:
                data = f.read(block)
                if hasher is not None:
                    hasher.update(data)
                # Cut after the last b"\n" (never inside a UTF-8 character): each piece holds
                # whole lines, so splitting each piece splits the text in the same places, at all
                # of str.splitlines' line breaks ("\r", "\u2028", ...).
                cut = data.rfind(b"\n") + 1 if data else len(rest) + len(data)
                if data and not cut:
                    rest += data
                    continue
                piece, rest = rest + data[:cut], data[cut:]
                for line in piece.decode(decode).splitlines():
                    n += 1
                    yield n, line
                decode = "utf-8"
                if not data:
                    break
    except (OSError, UnicodeDecodeError):
        pass  # read_text says what is wrong, and where
    else:
        return
    lines = read_text(path).splitlines()
    yield from enumerate(lines[n:], start=n + 1)


def json_lines(
    path: Path, *, file: str | Path, what: str, hasher: Any = None
) -> Iterator[tuple[int, dict[Any, Any]]]:
    """(line number, object) of each non-blank line of a JSONL file; a line that is not a JSON
    object is an error ("each line must be a JSON object" + `what`), located at `file`.
    `hasher`: as for `text_lines`."""
    for n, raw_line in text_lines(path, hasher=hasher):
        if not raw_line or raw_line.isspace():  # (no stripped copy of a long line)
            continue
        data = parse_json_line(raw_line, file=file, line=n)
        if not isinstance(data, dict):
            raise ConfigError(f"each line must be a JSON object{what}", file=file, line=n)
        yield n, data
