"""The comment body: the hidden marker that finds it again, GitHub's length rules, truncation."""

from __future__ import annotations

import re

from costguard.errors import GitHubError

COMMENT_LIMIT = 65536
"""GitHub's maximum issue/PR comment body ("body is too long (maximum is 65536 characters)")."""


MAX_TAG_LENGTH = 100


MARKER_RESERVE = 200
"""Room `truncate_body` leaves by default for the marker line that `upsert_comment` adds."""


_TAG_RE = re.compile(r"[A-Za-z0-9._/-]+")


def marker(tag: str = "default") -> str:
    """The hidden marker for `tag`: `<!-- costguard:tag=TAG -->`.

    Tags may only use letters, digits and `. _ / -` (at most 100 characters), so that a tag can
    neither end the HTML comment early nor make one tag's marker a prefix trick for another.
    """
    if not isinstance(tag, str) or not tag:
        raise GitHubError("the comment --tag must not be empty")
    if len(tag) > MAX_TAG_LENGTH:
        raise GitHubError(
            f"the comment --tag is {len(tag)} characters long; at most {MAX_TAG_LENGTH} allowed"
        )
    if not _TAG_RE.fullmatch(tag):
        raise GitHubError(f"invalid comment --tag {tag!r}: use only letters, digits and . _ / -")
    return f"<!-- costguard:tag={tag} -->"


def is_ours(body: str | None, mark: str) -> bool:
    """True when `body` is one of our comments for this marker: its first line IS the marker."""
    if not body:
        return False
    first = body.lstrip().split("\n", 1)[0].strip()
    return first == mark


def gh_len(text: str) -> int:
    """Length as a conservative GitHub would count it: UTF-16 code units.

    GitHub's limit is in characters. Counting UTF-16 units is >= the code-point count (an emoji
    outside the BMP counts 2), so staying under it keeps us under whichever way GitHub counts.
    """
    return len(text.encode("utf-16-le")) // 2


def _note(removed: int) -> str:
    return (
        f"\n\n> ✂️ … {removed:,} characters of details truncated (GitHub's comment limit is "
        f"{COMMENT_LIMIT:,} characters); see the job summary or the report artifact for the "
        "full report …\n\n"
    )


def truncate_body(body: str, limit: int = COMMENT_LIMIT, *, reserve: int = MARKER_RESERVE) -> str:
    """Fit `body` into `limit - reserve` characters (as counted by `gh_len`).

    A body that fits is returned unchanged. Otherwise the head (~70 %) and the tail are kept,
    the middle is cut at line boundaries and replaced by a visible note saying how many
    characters were dropped and where the full report is. An open code fence or `<details>`
    block at the cut is closed so that the note is not swallowed by it.
    """
    budget = limit - reserve
    if budget < 400:
        raise ValueError(f"limit {limit} minus reserve {reserve} is too small to truncate into")
    if gh_len(body) <= budget:
        return body
    lines = body.splitlines(keepends=True)
    avail = budget - gh_len(_note(len(body))) - 64  # slack for fence/details repairs
    while True:
        out = _cut_middle(body, lines, avail)
        over = gh_len(out) - budget
        if over <= 0:
            return out
        avail -= over + 16  # pathological repairs: shrink and try again


def _cut_middle(body: str, lines: list[str], avail: int) -> str:
    head_budget = max(0, int(avail * 0.7))
    head: list[str] = []
    used = 0
    for line in lines:
        n = gh_len(line)
        if used + n > head_budget:
            break
        head.append(line)
        used += n
    consumed = len(head)
    if not head and lines:  # the first line alone is too long: keep a prefix of it
        head = [_prefix_within(lines[0], head_budget)]
        used = gh_len(head[0])
        consumed = 1
    tail_budget = avail - used
    tail: list[str] = []
    tused = 0
    for line in reversed(lines[consumed:]):
        n = gh_len(line)
        if tused + n > tail_budget:
            break
        tail.append(line)
        tused += n
    tail.reverse()
    head_text = "".join(head)
    tail_text = "".join(tail)
    removed = len(body) - len(head_text) - len(tail_text)
    fix_head = ""
    if _fences(head_text) % 2:
        fix_head += "\n```"
    open_details = _open_details(head_text)
    if open_details > 0:
        fix_head += "\n\n</details>" * open_details
    fix_tail = "```\n" if _fences(tail_text) % 2 else ""
    if not fix_tail:
        # the tail's unmatched </details> get their opening tag back ...
        fix_tail += "<details><summary>… (continued)</summary>\n\n" * _unopened_details(tail_text)
        # ... and a table cut in the middle keeps its header
        fix_tail += _table_header_for(lines, len(lines) - len(tail), tail)
    return head_text.rstrip("\n") + fix_head + _note(removed) + fix_tail + tail_text


_DETAILS_RE = re.compile(r"<(/?)details\b", re.IGNORECASE)


_TABLE_SEPARATOR_RE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def _open_details(text: str) -> int:
    """`<details>` opened in `text` and not closed in it."""
    depth = 0
    for m in _DETAILS_RE.finditer(text):
        depth = depth - 1 if m.group(1) else depth + 1
        depth = max(depth, 0)
    return depth


def _unopened_details(text: str) -> int:
    """`</details>` in `text` whose opening tag is not in it."""
    depth = missing = 0
    for m in _DETAILS_RE.finditer(text):
        if m.group(1):
            if depth:
                depth -= 1
            else:
                missing += 1
        else:
            depth += 1
    return missing


def _table_header_for(lines: list[str], start: int, tail: list[str]) -> str:
    """The header and separator rows of the table that `lines[start]` continues, if any."""
    if not tail or not tail[0].lstrip().startswith("|") or _TABLE_SEPARATOR_RE.match(tail[0]):
        return ""
    if len(tail) > 1 and _TABLE_SEPARATOR_RE.match(tail[1]):
        return ""  # the tail starts with a whole table
    for i in range(start - 1, 0, -1):
        if not lines[i].lstrip().startswith("|"):
            return ""
        if _TABLE_SEPARATOR_RE.match(lines[i]):
            return lines[i - 1] + lines[i]
    return ""


def _fences(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.lstrip().startswith("```"))


def _prefix_within(text: str, budget: int) -> str:
    cut = text[:budget]
    while gh_len(cut) > budget:
        cut = cut[: len(cut) - (gh_len(cut) - budget)]
    return cut


def compose_body(body: str, tag: str = "default") -> str:
    """The exact body `upsert_comment` posts: marker line first, then `body`, within the limit.

    Lines equal to our marker inside `body` are dropped, so the marker appears exactly once.
    """
    mark = marker(tag)
    cleaned = "\n".join(
        line for line in body.replace("\r\n", "\n").split("\n") if line.strip() != mark
    ).strip("\n")
    room = COMMENT_LIMIT - gh_len(mark) - 1
    return mark + "\n" + truncate_body(cleaned, room, reserve=0)


def _normalized(body: str | None) -> str:
    return (body or "").replace("\r\n", "\n").strip()
