"""costguard: a CI gate for the token use, spend, latency and quality of routed LLM stacks.

`Costguard` is the API (see `costguard.api`); it is imported on first use so that
`costguard --help` and pytest start-up stay fast.
"""

from __future__ import annotations

import time as _time
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Costguard", "__version__"]

if TYPE_CHECKING:
    from costguard.api.facade import Costguard


def __getattr__(name: str) -> Any:
    if name == "Costguard":
        from costguard.api.facade import Costguard

        return Costguard
    raise AttributeError(f"module 'costguard' has no attribute {name!r}")


STARTED = (
    _time.perf_counter()
)  # when costguard was first imported: the start of `--profile`'s wall time
