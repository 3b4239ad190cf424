"""Bounded jinja2 rendering for fixture templates and chat templates (README "Reliability").

Templates arrive in pull requests, so a render must end quickly whatever the template does. On
top of jinja2's sandbox, every render here is bounded in:

- time: a watchdog thread interrupts a render that runs longer than `template_max_seconds`
  (pure-Python loops included; it raises `TemplateLimitError` inside the rendering thread);
- output: the rendered text may not exceed `template_max_output` characters, and no single
  string or list a template builds (`"x" * n`, `.center(n)`, namespace attributes) may either;
- iterations: all `range()` calls of one render yield at most `template_max_iterations` items.

The limits come from `costguard.model.limits` (environment variables raise them).
"""

from __future__ import annotations

import ctypes
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from costguard.model.limits import Limits, limits


class TemplateLimitError(Exception):
    """A render went past one of the limits (the message says which and how to raise it)."""


class _Budget:
    def __init__(self, bounds: Limits) -> None:
        self.bounds = bounds
        self.iterations = 0


_local = threading.local()


def _budget() -> _Budget | None:
    return getattr(_local, "budget", None)


def _too_big(size: int, what: str) -> None:
    budget = _budget()
    cap = budget.bounds.template_max_output if budget else limits().template_max_output
    if size > cap:
        raise TemplateLimitError(
            f"{what} of {size:,} items is larger than the limit of {cap:,} "
            "(COSTGUARD_TEMPLATE_MAX_OUTPUT)"
        )


def _counted_range(*args: Any) -> Iterator[int]:
    for a in args:
        if not isinstance(a, int) or isinstance(a, bool):
            raise TemplateLimitError("range() takes integers")
    r = range(*args)
    budget = _budget()
    if budget is not None:
        budget.iterations += len(r)
        cap = budget.bounds.template_max_iterations
        if budget.iterations > cap:
            raise TemplateLimitError(
                f"range() loops would run more than {cap:,} iterations in one render "
                "(COSTGUARD_TEMPLATE_MAX_ITERATIONS)"
            )
    return iter(r)


def _sized(value: Any) -> int:
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, (list, tuple, dict, set)):
        return len(value) + sum(len(v) for v in value if isinstance(v, str))
    return 0


_SIZE_FILTERS = frozenset({"center", "indent", "wordwrap", "batch", "slice", "truncate"})
"""Filters whose integer arguments (after the value filtered) are sizes of what they build."""
_SIZE_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def _check_sizes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    for a in (*args, *kwargs.values()):
        if isinstance(a, int) and not isinstance(a, bool):
            _too_big(abs(a), "a size argument")


def _bounded_call(fn: Callable[..., Any], sizes: bool) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        if sizes:
            _check_sizes(args[1:], kwargs)
        result = fn(*args, **kwargs)
        _too_big(_sized(result), "a value")
        return result

    for attr in ("jinja_pass_arg", "environmentfilter", "contextfilter", "evalcontextfilter"):
        if hasattr(fn, attr):
            setattr(call, attr, getattr(fn, attr))
    call.__name__ = getattr(fn, "__name__", "filter")
    return call


def bounded_environment(base: type, **options: Any) -> Any:
    """An instance of a subclass of the sandboxed environment `base` with the limits above."""
    from jinja2.utils import Namespace

    class BoundedNamespace(Namespace):
        def __setitem__(self, name: str, value: Any) -> None:
            _too_big(_sized(value), f"namespace attribute {name!r}")
            super().__setitem__(name, value)

    class BoundedEnvironment(base):
        intercepted_binops = frozenset({"*", "**", "+"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "**":
                if (
                    isinstance(right, (int, float))
                    and abs(right) > 256
                    and not (isinstance(left, (int, float)) and abs(left) <= 1)
                ):
                    raise TemplateLimitError("an exponent above 256 in a template")
            elif operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                        _too_big(len(seq) * max(n, 0), "a repeated value")
            result = super().call_binop(context, operator, left, right)
            if operator == "+":
                _too_big(_sized(result), "a value")
            return result

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
            if getattr(__obj, "__name__", None) in _SIZE_METHODS:
                _check_sizes(args, kwargs)
            result = super().call(__context, __obj, *args, **kwargs)
            _too_big(_sized(result), "a value")
            return result

    env = BoundedEnvironment(**options)
    env.globals["range"] = _counted_range
    env.globals["namespace"] = BoundedNamespace
    env.globals.pop("lipsum", None)
    env.filters = {name: _bounded_call(f, name in _SIZE_FILTERS) for name, f in env.filters.items()}
    return env


def render_bounded(template: Any, bounds: Limits | None = None, **variables: Any) -> str:
    """`template.render(**variables)` within the limits; TemplateLimitError when past one."""
    bounds = bounds or limits()
    previous = _budget()
    _local.budget = _Budget(bounds)
    token = _watchdog.arm(bounds.template_max_seconds)
    out: list[str] = []
    size = 0
    try:
        for chunk in template.root_render_func(_context(template, variables)):
            size += len(chunk)
            if size > bounds.template_max_output:
                raise TemplateLimitError(
                    f"the rendered text is longer than {bounds.template_max_output:,} "
                    "characters (COSTGUARD_TEMPLATE_MAX_OUTPUT)"
                )
            out.append(chunk)
        return "".join(out)
    except _Deadline:
        raise TemplateLimitError(
            f"rendering took longer than {bounds.template_max_seconds:g} s "
            "(COSTGUARD_TEMPLATE_MAX_SECONDS)"
        ) from None
    finally:
        _watchdog.disarm(token)
        _local.budget = previous


_FLAT_GLOBALS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _context(template: Any, variables: dict[str, Any]) -> Any:
    """The context `template.generate(**variables)` makes, without flattening the template's
    globals (a ChainMap over the environment's) again on every render: a fifth of rendering a
    short chat prompt. The globals are read once per template (costguard's environments are
    complete before their templates are compiled)."""
    flat = _FLAT_GLOBALS.get(template)
    if flat is None:
        flat = _FLAT_GLOBALS[template] = dict(template.globals)
    return template.new_context({**flat, **variables}, shared=True)


class _Deadline(BaseException):
    """Raised asynchronously in a render that ran out of time (BaseException: no template or
    library `except Exception` swallows it)."""


class _Watchdog:
    """One daemon thread that interrupts renders past their deadline, in whatever thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[int, tuple[int, float]] = {}  # token -> (thread id, deadline)
        self._fired: set[int] = set()
        self._next = 0
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> int:
        with self._lock:
            self._next += 1
            token = self._next
            self._armed[token] = (threading.get_ident(), time.monotonic() + seconds)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="costguard-template-watchdog", daemon=True
                )
                self._thread.start()
            return token

    def disarm(self, token: int) -> None:
        with self._lock:
            entry = self._armed.pop(token, None)
            if token in self._fired:
                self._fired.discard(token)
                if entry is not None:  # the exception may still be pending: withdraw it
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(entry[0]), None)

    def _run(self) -> None:
        while True:
            time.sleep(0.02)
            now = time.monotonic()
            with self._lock:
                for token, (tid, deadline) in self._armed.items():
                    if now >= deadline and token not in self._fired:
                        self._fired.add(token)
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(
                            ctypes.c_ulong(tid), ctypes.py_object(_Deadline)
                        )


_watchdog = _Watchdog()
