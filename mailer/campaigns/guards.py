"""Guards inside one render: a CPU-time limit, an output budget, and a sandbox that refuses
the operations that build a huge value in one step.

Operator templates run on contact data: a loop that only runs for some contacts, or
`'x' * (attributes.vip * 1000000)`, passes lint and blows up at send (issue #13: a render
process at 6.9 GB, a 136 MB message). What a render may cost is bounded here, where the
template runs; mailer.limits adds what only a process can give (a hard kill, RLIMIT_AS).

- CPU time: an interval timer on the process's CPU time (ITIMER_VIRTUAL) raises OverLimit
  at the next bytecode, in the template's own frames, so the error names its file and
  line. It fires again every period until disarmed, in case the first raise lands where
  Python swallows exceptions (a finalizer). A single C call that outlives it is the hard
  timer's job (mailer.limits); the guards below keep such calls small.
- Output: rendered pieces are joined in chunks and counted (bounded_join).
- One-step growth: repetition (`*`), powers, `%` and str.format widths, str.join,
  replace, center, indent, and what a namespace or a call receives are checked before
  they are computed, against the same budget.

The timer's OverLimit is a BaseException: it can strike anywhere, and no `except
Exception` on the way (Jinja's, the renderer's) may turn it into an ordinary render error
and carry on. The size guards raise TooLarge, an Exception: Jinja folds filters with
constant arguments while compiling, and only an Exception there makes it leave the call
for render time (where the guard then stops it) instead of failing the compilation.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable, Iterable
from itertools import islice
from types import FrameType
from typing import Any, ParamSpec, TypeVar

from jinja2.filters import FILTERS
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, pass_eval_context

__all__ = [
    "MESSAGE_TOO_LARGE",
    "RENDER_TIMEOUT",
    "GuardedSandbox",
    "OverLimit",
    "TooLarge",
    "bounded_join",
    "call_with_cpu_limit",
]

P = ParamSpec("P")
T = TypeVar("T")

# Skip reasons (deliveries.skip_reason, metric labels).
RENDER_TIMEOUT = "render_timeout"
MESSAGE_TOO_LARGE = "message_too_large"


class OverLimit(BaseException):
    """Raised inside a render that went over its CPU time."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


class TooLarge(Exception):
    """Raised inside a render before it builds a value over the output budget."""

    reason = MESSAGE_TOO_LARGE

    def __init__(self, what: str, size: int, limit: int) -> None:
        self.detail = (
            f"{what} would be {size:,} characters, over engine.max_message_bytes ({limit:,})"
        )
        super().__init__(self.detail)


# ---------------------------------------------------------------- CPU time

_armed = False
_detail = ""
_installed = False


def _expired(signum: int, frame: FrameType | None) -> None:
    if _armed:
        raise OverLimit(RENDER_TIMEOUT, _detail)


def call_with_cpu_limit(
    seconds: float,
    detail: str,
    fn: Callable[P, T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """fn(*args) with OverLimit(render_timeout) raised in it after `seconds` of CPU time.

    Signals reach the main thread only: called from another thread, fn runs unguarded.
    """
    global _armed, _detail, _installed
    if threading.current_thread() is not threading.main_thread():
        return fn(*args, **kwargs)
    if not _installed:
        signal.signal(signal.SIGVTALRM, _expired)
        _installed = True
    _detail = detail
    _armed = True
    try:
        signal.setitimer(signal.ITIMER_VIRTUAL, seconds, seconds)
        return fn(*args, **kwargs)
    finally:
        # First the flag (a plain store, where no signal handler can run), then the timer:
        # a signal handled from here on does nothing.
        _armed = False
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)


# ---------------------------------------------------------------- output


def bounded_join(pieces: Iterable[str], budget: int) -> str:
    """The pieces joined, refused once they pass `budget` characters (counted per chunk)."""
    # Joined per chunk of 1,024 pieces: a 6 KB message is ~300 pieces, one chunk, and then
    # this costs ~2 µs more than a plain join (measured); summing the pieces' lengths
    # instead cost ~25 µs a message, 8 % of a compose.
    out: list[str] = []
    size = 0
    it = iter(pieces)
    while chunk := list(islice(it, 1024)):
        part = "".join(chunk)
        size += len(part)
        if size > budget:
            raise TooLarge("the message", size, budget)
        if not out and len(chunk) < 1024:
            return part  # all of it in one chunk
        out.append(part)
    return "".join(out)


# ---------------------------------------------------------------- sandbox

# `%` conversions with a literal or `*` width; str.format fields with a width.
_PERCENT_WIDTH = re.compile(r"%[-#0 +]*(\*|\d+)")
_FORMAT_FIELD = re.compile(r"\{[^{}]*:([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")
_DIGITS = re.compile(r"\d+")


def _size(value: Any) -> int:
    """Characters (or items, or bytes of an int) a value holds; 0 for everything else."""
    if isinstance(value, str | list | tuple | bytes):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 8
    return 0


class GuardedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, refusing values over `max_output` before building them."""

    intercepted_binops = frozenset({"*", "**", "%"})
    max_output: int | None = None  # None: no guards (archive reproduction, tests)

    def __init__(self, *args: Any, max_output: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_output = max_output
        if max_output is not None:
            self.globals["namespace"] = _namespace_class(max_output)
            for name, wrap in _FILTER_GUARDS.items():
                self.filters[name] = wrap(FILTERS[name], max_output)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        limit = self.max_output
        if limit is not None:
            _check_binop(operator, left, right, limit)
        return super().call_binop(context, operator, left, right)

    def call(
        __self,  # Jinja's own spelling: no keyword argument of the call can clash
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        limit = __self.max_output
        if limit is not None:
            args = _check_call(__obj, args, kwargs, limit)
        return super().call(__context, __obj, *args, **kwargs)


def _check_binop(operator: str, left: Any, right: Any, limit: int) -> None:
    if operator == "*":
        for seq, count in ((left, right), (right, left)):
            sized = isinstance(seq, str | list | tuple) and isinstance(count, int)
            size = len(seq) * count if sized else 0
            if size > limit:
                raise TooLarge("a repetition", size, limit)
        if isinstance(left, int) and isinstance(right, int) and _size(left) + _size(right) > limit:
            raise TooLarge("a product", _size(left) + _size(right), limit)
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            digits = right * abs(left).bit_length() // 8
            if digits > limit:
                raise TooLarge("a power", digits, limit)
    elif operator == "%" and isinstance(left, str):
        _check_percent(left, right if isinstance(right, tuple) else (right,), limit)


def _check_percent(text: str, args: Iterable[Any], limit: int) -> None:
    star = False
    for match in _PERCENT_WIDTH.finditer(text):
        if match[1] == "*":
            star = True
        elif int(match[1]) > limit:
            raise TooLarge("a formatted width", int(match[1]), limit)
    if star:
        for arg in args:
            if isinstance(arg, int) and arg > limit:
                raise TooLarge("a formatted width", arg, limit)


def _check_call(
    obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any], limit: int
) -> tuple[Any, ...]:
    """Refuse a call whose result would be over `limit`; the arguments to call it with."""
    values = (*args, *kwargs.values())
    for value in values:
        # What a macro receives: a recursive macro doubling its argument grows nothing else.
        if _size(value) > limit:
            raise TooLarge("an argument", _size(value), limit)
    # str methods: `.center(10**9)`, `.format` widths, `.join`, `.replace`.
    bound = getattr(getattr(obj, "__wrapped__", obj), "__self__", None)
    if not isinstance(bound, str):
        return args
    name = getattr(getattr(obj, "__wrapped__", obj), "__name__", "")
    if name in ("format", "format_map"):
        for spec in _FORMAT_FIELD.findall(bound):
            if "{" in spec:  # a width taken from the arguments
                _check_ints(values, limit)
            for digits in _DIGITS.findall(spec):
                if int(digits) > limit:
                    raise TooLarge("a formatted width", int(digits), limit)
    elif name == "join" and args:
        # A generator has no length: count what it yields (the join would hold it all anyway).
        items = args[0] if hasattr(args[0], "__len__") else list(args[0])
        _check_join(bound, items, limit)
        return (items, *args[1:])
    elif name == "replace" and len(args) >= 2:
        _check_replace(bound, args[0], args[1], limit)
    else:
        _check_ints(values, limit)  # widths, counts, tab sizes
    return args


def _check_ints(values: Iterable[Any], limit: int) -> None:
    for value in values:
        if isinstance(value, int) and value > limit:
            raise TooLarge("a width", value, limit)


def _check_join(separator: str, items: Any, limit: int) -> None:
    if hasattr(items, "__len__") and len(separator) * len(items) > limit:
        raise TooLarge("a join", len(separator) * len(items), limit)


def _check_replace(text: Any, old: Any, new: Any, limit: int) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        count = text.count(old) if old else len(text) + 1
        size = len(text) + count * (len(new) - len(old))
        if size > limit:
            raise TooLarge("a replace", size, limit)


def _namespace_class(limit: int) -> type[Namespace]:
    class GuardedNamespace(Namespace):
        # `{% set ns.s = ns.s ~ ns.s %}` in a loop doubles a value each turn: refuse it here.
        def __setitem__(self, name: str, value: Any) -> None:
            if _size(value) > limit:
                raise TooLarge(f"namespace value {name!r}", _size(value), limit)
            super().__setitem__(name, value)

    return GuardedNamespace


# Filters that build a big value from small arguments, each checked before it runs.


def _guard_center(original: Callable[..., str], limit: int) -> Callable[..., str]:
    def center(value: str, width: int = 80) -> str:
        _check_ints((width,), limit)
        return original(value, width)

    return center


def _guard_indent(original: Callable[..., str], limit: int) -> Callable[..., str]:
    def indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
        lines = str(s).count("\n") + 1
        each = len(width) if isinstance(width, str) else width
        if isinstance(each, int) and lines * each > limit:
            raise TooLarge("an indent", lines * each, limit)
        return original(s, width, first, blank)

    return indent


def _guard_format(original: Callable[..., str], limit: int) -> Callable[..., str]:
    def format_(value: str, *args: Any, **kwargs: Any) -> str:
        _check_percent(str(value), (*args, *kwargs.values()), limit)
        return original(value, *args, **kwargs)

    return format_


def _guard_join(original: Callable[..., str], limit: int) -> Callable[..., str]:
    @pass_eval_context
    def join(eval_ctx: EvalContext, value: Any, d: str = "", attribute: Any = None) -> str:
        items = value if hasattr(value, "__len__") else list(value)
        _check_join(str(d), items, limit)
        return original(eval_ctx, items, d, attribute)

    return join


def _guard_replace(original: Callable[..., str], limit: int) -> Callable[..., str]:
    @pass_eval_context
    def replace(eval_ctx: EvalContext, s: str, old: str, new: str, count: int | None = None) -> str:
        if count is None:
            _check_replace(str(s), str(old), str(new), limit)
        elif isinstance(count, int):
            _check_ints((count * len(str(new)),), limit)
        return original(eval_ctx, s, old, new, count)

    return replace


_FILTER_GUARDS: dict[str, Callable[[Callable[..., str], int], Callable[..., str]]] = {
    "center": _guard_center,
    "indent": _guard_indent,
    "format": _guard_format,
    "join": _guard_join,
    "replace": _guard_replace,
}
