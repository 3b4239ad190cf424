"""The fixture file format: fixtures, messages (content parts, tool calls), tools, sampling,
assertions and expectations as strict pydantic models (what a fixture file may say)."""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any, Literal, NamedTuple

from pydantic import Field, field_validator, model_validator

from costguard.model.yamlio import (
    StrictModel,
    check_regex,
)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"


# Content part types whose text the server puts in the prompt (vLLM's TEXT_PART_TYPES), and the
# key that holds the text.
TEXT_PART_KEYS = {
    "text": "text",
    "input_text": "text",
    "output_text": "text",
    "refusal": "refusal",
    "thinking": "thinking",
}


MEDIA_PART_TYPES = (
    "image_url",
    "input_image",
    "image_embeds",
    "image_pil",
    "audio_url",
    "input_audio",
    "audio_embeds",
    "video_url",
    "video_embeds",
    "file",
)


def check_content_parts(parts: list[Any]) -> None:
    """Content parts must be text parts: media parts are refused with a reason, never dropped."""
    for j, part in enumerate(parts):
        if isinstance(part, str):
            continue
        if not isinstance(part, dict):
            raise ValueError(f"content[{j}] must be a mapping with a `type` (a content part)")
        kind = part.get("type", "text")
        if kind in TEXT_PART_KEYS:
            text = part.get(TEXT_PART_KEYS[kind])
            if text is not None and not isinstance(text, str):
                raise ValueError(f"content[{j}].{TEXT_PART_KEYS[kind]} must be a string")
            continue
        if kind in MEDIA_PART_TYPES or any(k in part for k in MEDIA_PART_TYPES):
            raise ValueError(
                f"content[{j}] is a {kind!r} part: costguard counts text only and cannot count the "
                "tokens of images, audio, video or files offline (their count depends on the model's "
                "processor); remove the part or replace it with the text the model sees"
            )
        raise ValueError(
            f"content[{j}] has unknown part type {kind!r} (text parts: {', '.join(TEXT_PART_KEYS)})"
        )


def parts_text(content: Any) -> str:
    """The text of a message's content, text parts joined with "\n" as vLLM joins them."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict):
            text = part.get(TEXT_PART_KEYS.get(part.get("type", "text"), "text"))
            if isinstance(text, str):
                texts.append(text)
    return "\n".join(texts)


def tool_fields(tools: Any, tool_choice: Any) -> dict[str, Any]:
    """`tools` and `tool_choice` of a request, only those that are set (a plain chat request's
    body, hash and cache keys stay what they were before tools existed)."""
    out: dict[str, Any] = {}
    if tools is not None:
        out["tools"] = tools
    if tool_choice is not None:
        out["tool_choice"] = tool_choice
    return out


def message_text(message: dict[str, Any]) -> str:
    """A message's text (content parts joined the way vLLM joins them)."""
    return parts_text(message.get("content"))


class FunctionCall(StrictModel):
    name: str
    arguments: str | dict[str, Any] = Field(
        default="{}", description="JSON text (as the API sends it) or a mapping"
    )


class ToolCall(StrictModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall

    def as_request(self) -> dict[str, Any]:
        """The OpenAI form: `arguments` as JSON text."""
        args = self.function.arguments
        if not isinstance(args, str):
            args = json.dumps(args, ensure_ascii=False)
        out: dict[str, Any] = {"id": self.id} if self.id is not None else {}
        out["type"] = "function"
        out["function"] = {"name": self.function.name, "arguments": args}
        return out


class FunctionDefinition(StrictModel):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(StrictModel):
    """A tool the request offers the model (OpenAI `tools[]` entry)."""

    type: Literal["function"] = "function"
    function: FunctionDefinition


class Message(StrictModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[Any] | None = Field(
        default=None, description="text, or a list of text content parts"
    )
    template: str | None = Field(
        default=None, description="jinja2 file (relative to the fixture file)"
    )
    name: str | None = None
    tool_calls: list[ToolCall] | None = Field(
        default=None, description="assistant only: the tool calls the model made"
    )
    tool_call_id: str | None = Field(
        default=None, description="tool only: the call this message answers"
    )

    @field_validator("content")
    @classmethod
    def _text_parts(cls, content: Any) -> Any:
        if isinstance(content, list):
            check_content_parts(content)
        return content

    @model_validator(mode="after")
    def _content_or_template(self) -> Message:
        if self.content is not None and self.template is not None:
            raise ValueError("give exactly one of content or template")
        if self.content is None and self.template is None and not self.tool_calls:
            raise ValueError("give exactly one of content or template")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("tool_calls belong to assistant messages")
        if self.tool_call_id is not None and self.role != "tool":
            raise ValueError("tool_call_id belongs to tool messages")
        return self

    def as_request(self, content: Any) -> dict[str, Any]:
        """The message as an OpenAI chat request carries it."""
        out: dict[str, Any] = {"role": self.role, "content": content}
        if self.name is not None:
            out["name"] = self.name
        if self.tool_calls is not None:
            out["tool_calls"] = [call.as_request() for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


class Sampling(StrictModel):
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    response_format: dict[str, Any] | None = None
    prompt_logprobs: int | None = Field(
        default=None,
        ge=-1,
        description="vLLM: logprobs of the prompt tokens (-1: the whole vocabulary); vLLM skips "
        "its prefix cache for such requests",
    )

    def as_request_params(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class JsonCheck(StrictModel):
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


class SimilarCheck(StrictModel):
    threshold: float = Field(ge=-1, le=1)
    reference: str | None = Field(default=None, description="default: expect.reference")


class JudgeCheck(StrictModel):
    rubric: str
    tier: str | None = None
    min_score: float = Field(default=0.7, ge=0, le=1)


ASSERTION_TYPES = (
    "equals",
    "contains",
    "icontains",
    "not_contains",
    "regex",
    "json",
    "max_output_tokens",
    "similar",
    "judge",
    "custom",
)


class Assertion(StrictModel):
    """One quality check on a response: exactly one type key, plus an optional weight."""

    equals: str | None = None
    contains: str | None = None
    icontains: str | None = None
    not_contains: str | None = None
    regex: str | None = None
    json_: bool | JsonCheck | None = Field(default=None, alias="json")
    max_output_tokens: int | None = Field(default=None, ge=0)
    similar: SimilarCheck | None = None
    judge: JudgeCheck | None = None
    custom: str | None = Field(
        default=None, description="dotted path of a scorer: package.module:function"
    )
    weight: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> Assertion:
        given = [
            t for t in ASSERTION_TYPES if getattr(self, "json_" if t == "json" else t) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                f"an assertion has exactly one type key of {', '.join(ASSERTION_TYPES)}"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.regex is not None:
            check_regex(self.regex)
        return self

    @cached_property
    def type(self) -> str:
        return next(
            t for t in ASSERTION_TYPES if getattr(self, "json_" if t == "json" else t) is not None
        )

    @cached_property
    def value(self) -> Any:
        return getattr(self, "json_" if self.type == "json" else self.type)


class Expect(StrictModel):
    output_tokens: int | None = Field(default=None, ge=0, description="expected completion tokens")
    reference: str | None = None
    assertions: list[Assertion] = Field(default_factory=list)


class FixtureSpec(StrictModel):
    id: str = Field(pattern=ID_PATTERN)
    suite: str | None = None
    weight: float = Field(default=1.0, gt=0)
    messages: list[Message] | None = None
    template: str | None = Field(
        default=None, description="shorthand: one user message rendered from this file"
    )
    vars: dict[str, Any] = Field(default_factory=dict)
    tools: list[Tool] | None = Field(default=None, description="tools offered to the model")
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    model: str | None = None
    sampling: Sampling = Field(default_factory=Sampling)
    expect: Expect = Field(default_factory=Expect)
    label: str | None = None
    tags: list[str] = Field(default_factory=list)
    skip: str | None = None
    xfail: str | None = None

    @model_validator(mode="after")
    def _messages_or_template(self) -> FixtureSpec:
        if (self.messages is None) == (self.template is None):
            raise ValueError("give exactly one of messages or template")
        if self.messages is not None and not self.messages:
            raise ValueError("messages must not be empty")
        return self


class FixtureFile(StrictModel):
    suite: str | None = None
    defaults: dict[str, Any] = Field(default_factory=dict)
    fixtures: list[dict[str, Any]] = Field(min_length=1)


_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, unicode as is: the serialisation every content key hashes.

    (What `json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))` gives,
    through one encoder made once: dumps makes one a call.)"""
    return _CANONICAL.encode(value)


class ChatRequest(NamedTuple):
    """An OpenAI chat-completion request body, read the way fixtures hold it."""

    messages: list[dict[str, Any]]
    sampling: dict[str, Any]
    model: str | None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None

    def fixture_fields(self) -> dict[str, Any]:
        """The fixture keys this request fills (for a fixture dict validated by FixtureSpec)."""
        out: dict[str, Any] = {
            "messages": self.messages,
            **tool_fields(self.tools, self.tool_choice),
        }
        if self.sampling:
            out["sampling"] = self.sampling
        if self.model:
            out["model"] = self.model
        return out


_MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")
