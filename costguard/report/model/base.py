"""The base of every report section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A report section: typed fields, extra keys kept (minor versions add fields)."""

    model_config = ConfigDict(extra="allow", frozen=True)
