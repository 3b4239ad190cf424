"""costguard: a CI gate for the token use, spend, latency and quality of routed LLM stacks."""

import time as _time

__version__ = "0.1.0"

STARTED = (
    _time.perf_counter()
)  # when costguard was first imported: the start of `--profile`'s wall time
