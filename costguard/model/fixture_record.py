"""`Fixture`: one request of representative traffic, ready to replay (messages rendered,
defaults applied), and the content keys every cache and recording is keyed by."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring as _string_json
from typing import Any, overload

from costguard.model.fixture_spec import (
    Expect,
    Sampling,
    canonical_json,
    message_text,
    tool_fields,
)


@dataclass(slots=True)
class Fixture:
    """A fixture ready to replay: messages rendered, defaults applied."""

    id: str
    suite: str
    weight: float
    messages: list[dict[str, Any]]
    sampling: Sampling
    expect: Expect
    file: str
    line: int | None
    model: str | None = None
    label: str | None = None
    tags: list[str] = field(default_factory=list)
    skip: str | None = None
    xfail: str | None = None
    templates: list[str] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    _hash: str | None = field(default=None, repr=False)
    _messages_digest: str | None = field(default=None, repr=False)
    _sampling_json: str | None = field(default=None, repr=False)
    # Where the messages are kept when they are not held here (`StoredMessages`): a fixture read
    # from a snapshot reads them from the snapshot's file each time they are asked for.
    _stored: Any = field(default=None, repr=False, compare=False)
    _at: int = field(default=0, repr=False, compare=False)

    def request_body(self) -> dict[str, Any]:
        """What a backend sends besides the model and sampling: messages, tools, tool_choice."""
        return {"messages": self.messages, **tool_fields(self.tools, self.tool_choice)}

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    @property
    def sampling_json(self) -> str:
        """The sampling parameters sent with the request, as canonical JSON."""
        if self._sampling_json is None:
            self._sampling_json = canonical_json(self.sampling.as_request_params())
        return self._sampling_json

    @property
    def content_hash(self) -> str:
        """Hash of everything a backend sees: messages, sampling, requested model.

        The sha256 of the canonical JSON of {"m": messages, "model": model, "s": sampling}.
        """
        if self._hash is None:
            self._derive_keys()
        assert self._hash is not None
        return self._hash

    @property
    def messages_digest(self) -> str:
        """sha256 of the conversation's canonical JSON (sorted keys, compact; with its tools when
        it has any): the token-count cache key, `tokenization.messages_key(messages, tools)`."""
        if self._messages_digest is None:
            if self._stored is not None:
                return str(self._stored.digest(self._at))
            self._derive_keys()
        assert self._messages_digest is not None
        return self._messages_digest

    def _derive_keys(self) -> None:
        """Both content keys from one serialisation of the messages (kept only as digests: the
        JSON of 100k long prompts would double the fixtures' memory). The pieces are joined in
        sorted-key order, so each digest equals that of one json.dumps(sort_keys=True) of the
        whole payload; tools and tool_choice only when set (plain chat keys stay put)."""
        messages_json = _messages_json(self.messages)
        tools_json = canonical_json(self.tools) if self.tools is not None else None
        conversation = (
            messages_json
            if tools_json is None
            else f'{{"messages":{messages_json},"tools":{tools_json}}}'
        )
        self._messages_digest = hashlib.sha256(
            conversation.encode("utf-8", "surrogatepass")
        ).hexdigest()
        model = self.model
        model_json = (
            "null"
            if model is None
            else _string_json(model)
            if type(model) is str
            else json.dumps(model, ensure_ascii=False)
        )
        canonical = f'{{"m":{messages_json},"model":{model_json},"s":{self.sampling_json}'
        if self.tool_choice is not None:
            canonical += f',"tool_choice":{canonical_json(self.tool_choice)}'
        if tools_json is not None:
            canonical += f',"tools":{tools_json}'
        self._hash = hashlib.sha256((canonical + "}").encode()).hexdigest()

    @property
    def may_show_replies(self) -> bool:
        """Whether an assistant message follows the first message (a conversation that shows
        what the model replied), without reading stored messages that have none."""
        if self._stored is not None:
            return bool(self._stored.may_show_replies(self._at))
        return any(k and m.get("role") == "assistant" for k, m in enumerate(self.messages))

    @property
    def last_user_text(self) -> str:
        for msg in reversed(self.messages):
            if msg["role"] == "user":
                return message_text(msg)
        return ""

    @property
    def system_text(self) -> str:
        return "\n".join(
            message_text(m) for m in self.messages if m["role"] in ("system", "developer")
        )


class MessagesOf(Sequence[list[dict[str, Any]]]):
    """The fixtures' messages by position, each read when asked for (stored fixtures' messages
    are not held: a list of them all would hold every text of a million fixtures)."""

    def __init__(self, fixtures: Sequence[Fixture]) -> None:
        self._fixtures = fixtures

    def __len__(self) -> int:
        return len(self._fixtures)

    @overload
    def __getitem__(self, index: int) -> list[dict[str, Any]]: ...
    @overload
    def __getitem__(self, index: slice) -> list[list[dict[str, Any]]]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [fx.messages for fx in self._fixtures[index]]
        return self._fixtures[index].messages


# `messages` is a slot that a stored fixture leaves empty: reading it reads the stored messages
# (each time: a million fixtures' texts are not held), and setting it holds the value given.
_messages_slot = Fixture.__dict__["messages"]


def _get_messages(fixture: Fixture) -> list[dict[str, Any]]:
    stored = fixture._stored
    if stored is None:
        return _messages_slot.__get__(fixture, Fixture)
    return stored.read(fixture._at)


def _set_messages(fixture: Fixture, messages: list[dict[str, Any]]) -> None:
    _messages_slot.__set__(fixture, messages)
    fixture._stored = None


setattr(Fixture, "messages", property(_get_messages, _set_messages))  # noqa: B010


def _messages_json(messages: list[dict[str, Any]]) -> str:
    """`canonical_json(messages)`, put together directly when every message is plain text
    ({"role", "content"} strings, the usual case): the same string, without walking the
    structure (sorted keys: "content" comes before "role")."""
    parts = []
    for message in messages:
        if type(message) is not dict or len(message) != 2:
            return canonical_json(messages)
        content, role = message.get("content"), message.get("role")
        if type(content) is not str or type(role) is not str:
            return canonical_json(messages)
        if role in SHARED_ROLES:
            content_json = _shared_json(content)
        else:
            content_json = _string_json(content)
        parts.append(f'{{"content":{content_json},"role":{_string_json(role)}}}')
    return "[" + ",".join(parts) + "]"


SHARED_ROLES = frozenset({"system", "developer"})  # their texts repeat across requests
SHARED_JSON_CHARS = 4_000_000  # the memo below holds at most this many characters of text
_shared: dict[str, str] = {}
_shared_chars = [0]


def _shared_json(text: str) -> str:
    """`_string_json(text)` for texts that repeat across requests (system prompts): each
    distinct one escaped once per process, within a bounded memo."""
    escaped = _shared.get(text)
    if escaped is None:
        escaped = _string_json(text)
        if _shared_chars[0] + len(text) + len(escaped) <= SHARED_JSON_CHARS:
            _shared[text] = escaped
            _shared_chars[0] += len(text) + len(escaped)
    return escaped
