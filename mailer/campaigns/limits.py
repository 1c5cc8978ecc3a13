"""The limits one message's composition runs under, and what going over each means.

| limit | setting | skip reason |
| CPU time per message | engine.render_timeout_ms | render_timeout |
| message size | engine.max_message_bytes, and the relay's EHLO SIZE | message_too_large |
| address space of a render process | engine.render_memory_mb | render_memory |

In a render process (mailer.render_pool) all three hold hard: over the CPU limit the
template is interrupted where it stands (mailer.guards); if a single C call outlives that,
a second timer whose default action is to terminate (SIGPROF, user + system time) kills
the process at twice the limit plus a second, and the worker replaces it. RLIMIT_AS turns
a runaway allocation into a MemoryError, which ends the process too. With
`render_processes = 0` the engine composes on its own loop under the same CPU-time limit
and the same size guards, but without the hard timer or the address-space cap, which
would kill or starve the worker itself; `campaign check` always renders in a process.
"""

from __future__ import annotations

import resource
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from mailer.campaigns.guards import (
    MESSAGE_TOO_LARGE,
    RENDER_TIMEOUT,
    OverLimit,
    call_with_cpu_limit,
)
from mailer.campaigns.render import LimitError
from mailer.core.settings import EngineSettings

__all__ = [
    "EXIT_MEMORY",
    "MESSAGE_TOO_LARGE",
    "RENDER_CRASHED",
    "RENDER_MEMORY",
    "RENDER_TIMEOUT",
    "RenderLimits",
    "reason_for_exit",
    "timed",
    "timed_hard",
]

P = ParamSpec("P")
T = TypeVar("T")

RENDER_MEMORY = "render_memory"
RENDER_CRASHED = "render_crashed"  # a render process died of something else (a bug)
# A render process's exit status after a MemoryError (sysexits.h EX_TEMPFAIL).
EXIT_MEMORY = 75


@dataclass(frozen=True, slots=True)
class RenderLimits:
    """Per-message limits; the defaults are the settings' defaults."""

    timeout_ms: int = 500
    max_message_bytes: int = 10_000_000
    memory_mb: int = 512

    @classmethod
    def from_settings(cls, engine: EngineSettings) -> RenderLimits:
        """The [engine] settings' limits."""
        return cls(engine.render_timeout_ms, engine.max_message_bytes, engine.render_memory_mb)

    @property
    def hard_timeout_s(self) -> float:
        """CPU seconds after which a render process is killed outright."""
        return 2 * self.timeout_ms / 1000 + 1.0

    def timeout_detail(self) -> str:
        return f"took more than {self.timeout_ms:,} ms of CPU time (engine.render_timeout_ms)"

    def killed_detail(self, reason: str) -> str:
        """What a render process's death means, for the skipped delivery's reply."""
        if reason == RENDER_TIMEOUT:
            return (
                f"render process killed after {self.hard_timeout_s * 1000:,.0f} ms of CPU time "
                f"(engine.render_timeout_ms = {self.timeout_ms:,})"
            )
        if reason == RENDER_MEMORY:
            return (
                f"render process ran out of memory (engine.render_memory_mb = {self.memory_mb:,})"
            )
        return "render process died"

    def apply_to_process(self) -> None:
        """Cap this process's address space (run first thing in a render process)."""
        cap = self.memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a killed render leaves no core file


def timed(
    limits: RenderLimits,
    fn: Callable[P, T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """fn(*args) under the CPU-time limit; LimitError when over a limit, MemoryError included."""
    try:
        return call_with_cpu_limit(
            limits.timeout_ms / 1000, limits.timeout_detail(), fn, *args, **kwargs
        )
    except OverLimit as exc:  # interrupted outside a template (links, MIME, DKIM)
        raise LimitError(exc.reason, exc.detail) from None
    except MemoryError:
        raise LimitError(RENDER_MEMORY, "out of memory while composing") from None


def timed_hard(
    limits: RenderLimits,
    fn: Callable[P, T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """timed(), and the process is killed (SIGPROF) if it is still busy at hard_timeout_s.

    Only in a render process: the kill is the default action of SIGPROF, which nothing
    in a render process handles. MemoryError propagates (the process ends on it).
    """
    signal.setitimer(signal.ITIMER_PROF, limits.hard_timeout_s)
    try:
        return call_with_cpu_limit(
            limits.timeout_ms / 1000, limits.timeout_detail(), fn, *args, **kwargs
        )
    except OverLimit as exc:
        raise LimitError(exc.reason, exc.detail) from None
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)


def reason_for_exit(exitcode: int | None) -> str:
    """The skip reason a render process's exit status means."""
    if exitcode in (-signal.SIGPROF, -signal.SIGVTALRM, -signal.SIGXCPU):
        return RENDER_TIMEOUT
    # SIGKILL: the kernel's OOM killer (the worker only kills a process it abandons).
    if exitcode in (EXIT_MEMORY, -signal.SIGKILL):
        return RENDER_MEMORY
    return RENDER_CRASHED
