"""The DiffReport object: its typed model, its JSON form, reading and writing it.

`model` (`costguard.compare.model.DiffReportModel`) is what the diff is; the JSON written to a
file (docs/report-format.md, "DiffReport") is that model with the unset optional keys left out,
its keys in the format's order (which predates the model's field order in four places).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from costguard.compare.fixtures import FIXTURE_FIELDS
from costguard.compare.model import DiffReportModel, PolicyOutcome
from costguard.compare.sections import PER_REQUEST, USAGE_FIELDS
from costguard.errors import ConfigError
from costguard.report.run_report import (
    json_with_compact_rows,
    load_document,
    validation_message,
    write_atomic,
)

DIFF_SCHEMA_VERSION = "1.0"
DIFF_SCHEMA_MAJOR = DIFF_SCHEMA_VERSION.split(".")[0]
DIFF_REQUIRED_KEYS = ("schema_version", "base", "head", "totals", "tiers", "suites", "fixtures")

# The JSON's key order where it is not the model's field order (other keys follow, in theirs).
_TOTALS_ORDER = (*USAGE_FIELDS, *(label for label, _ in PER_REQUEST), "estimated")
_BLOCK_ORDER = (
    "status",
    *USAGE_FIELDS,
    "share",
    "cost_per_request",
    "fixtures",
    "estimated",
    "model",
)
_FIXTURE_ORDER = (
    "id",
    "suite",
    "location",
    *FIXTURE_FIELDS,
    "served_by",
    "cache",
    "escalated",
    "estimated",
    "quality",
    "prompt_changed",
    "status",
    "templates_changed",
)
_POLICY_ORDER = ("policy", "verdict", "verdicts", "acknowledgement")


def _ordered(data: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    first = {key: data[key] for key in order if key in data}
    return {**first, **{key: value for key, value in data.items() if key not in first}}


def diff_json(model: DiffReportModel) -> dict[str, Any]:
    """The DiffReport's JSON object: the set fields of `model`, in the format's key order."""
    data = model.model_dump(exclude_unset=True)
    data["totals"] = _ordered(data["totals"], _TOTALS_ORDER)
    for section in ("tiers", "suites"):
        data[section] = {name: _ordered(b, _BLOCK_ORDER) for name, b in data[section].items()}
    fixtures = data["fixtures"]
    fixtures["items"] = [_ordered(item, _FIXTURE_ORDER) for item in fixtures["items"]]
    if data.get("policy") is not None:
        data["policy"] = _ordered(data["policy"], _POLICY_ORDER)
    return data


class DiffReport:
    """A diff: `model` is what it says (typed, `costguard.compare.model`), what renderers and
    policy metrics read; `data` is its JSON form, which is what gets written."""

    def __init__(self, diff: DiffReportModel | dict[str, Any], path: Path | None = None) -> None:
        """From its model, or from its JSON form (validated here)."""
        self.model = (
            diff if isinstance(diff, DiffReportModel) else DiffReportModel.model_validate(diff)
        )
        self.path = path
        self._data: dict[str, Any] | None = None

    @property
    def data(self) -> dict[str, Any]:
        """The JSON form (made once; again after `attach_policy`)."""
        if self._data is None:
            self._data = diff_json(self.model)
        return self._data

    @property
    def has_baseline(self) -> bool:
        return self.model.base.available

    @property
    def changed(self) -> bool:
        return self.model.changed

    @property
    def totals(self) -> dict[str, Any]:
        return self.data["totals"]

    @property
    def monthly_cost(self) -> dict[str, Any]:
        return self.data["totals"]["cost_per_month"]

    @property
    def policy(self) -> dict[str, Any] | None:
        return self.data.get("policy")

    @property
    def verdict(self) -> str | None:
        policy = self.model.policy
        return policy.verdict if policy else None

    def attach_policy(self, result: dict[str, Any]) -> None:
        """Record the policy verdicts (PolicyResult.to_dict()) so renderers need nothing else."""
        outcome = PolicyOutcome.model_validate(result)
        self.model = self.model.model_copy(update={"policy": outcome})
        self._data = None

    def to_json(self) -> str:
        """Indented JSON with one compact line per changed fixture (fast and diffable at 100k)."""
        return json_with_compact_rows(self.data, ("fixtures", "items"))

    def write(self, path: str | Path) -> Path:
        self.path = write_atomic(path, self.to_json())
        return self.path


def load_diff(path: str | Path) -> DiffReport:
    data = load_document(
        path,
        kind="diff",
        what="DiffReport",
        required=DIFF_REQUIRED_KEYS,
        schema_major=DIFF_SCHEMA_MAJOR,
        missing_hint="write one with `costguard diff ... --out FILE`",
    )
    try:  # validate now: a bad diff is bad input, named with its key
        return DiffReport(data, Path(path))
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, "DiffReport"), file=path) from None
