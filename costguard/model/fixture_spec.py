"""The fixture file format: fixtures, messages, sampling, assertions and expectations as strict
pydantic models (what `fixtures.yaml` may say)."""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

from pydantic import Field, model_validator

from costguard.model.yamlio import (
    StrictModel,
    check_regex,
)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"


class Message(StrictModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | None = None
    template: str | None = Field(
        default=None, description="jinja2 file (relative to the fixture file)"
    )
    name: str | None = None

    @model_validator(mode="after")
    def _content_or_template(self) -> Message:
        if (self.content is None) == (self.template is None):
            raise ValueError("give exactly one of content or template")
        return self


class Sampling(StrictModel):
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    response_format: dict[str, Any] | None = None

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
