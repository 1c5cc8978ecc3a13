"""Expected failures logged as a summary: one line per kind per interval, not one per message.

A 20 s Postgres outage once wrote 892 worker tracebacks, one per deferred
message, burying the one line that mattered. Failures the engine expects
and recovers from (database unreachable, SMTP relay unreachable) go through
a `FailureLog`: the first of a quiet spell is logged at once (an outage
shows when it starts), the rest are counted and logged as one line per
interval with the count and the first error. Tracebacks are kept for bugs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

SUMMARY_EVERY_S = 10.0


@dataclass
class _Spell:
    """Failures of one kind since the last line about them."""

    since: float
    count: int = 0
    first: str = ""


class FailureLog:
    def __init__(
        self,
        logger: logging.Logger,
        every_s: float = SUMMARY_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = logger
        self.every_s = every_s
        self.clock = clock
        self._spells: dict[str, _Spell] = {}
        self.total = 0  # failures seen, for tests and the shutdown line

    def failed(self, kind: str, error: BaseException | str) -> None:
        """One expected failure of `kind` (a short sentence naming what failed)."""
        self.total += 1
        now = self.clock()
        spell = self._spells.get(kind)
        if spell is None:
            self._spells[kind] = _Spell(since=now)
            self.log.warning("%s: %s", kind, _describe(error))
            return
        spell.count += 1
        if not spell.first:
            spell.first = _describe(error)
        self.flush_due()

    def flush_due(self) -> None:
        """Write the summary of every kind whose interval has passed."""
        now = self.clock()
        for kind, spell in list(self._spells.items()):
            if now - spell.since < self.every_s:
                continue
            if spell.count == 0:
                # A whole interval without this failure: the spell is over, and the
                # next one is logged at once again.
                del self._spells[kind]
                continue
            self._summarise(kind, spell, now)
            self._spells[kind] = _Spell(since=now)

    def flush(self) -> None:
        """Write every pending summary now (at shutdown)."""
        now = self.clock()
        for kind, spell in self._spells.items():
            if spell.count:
                self._summarise(kind, spell, now)
        self._spells.clear()

    def _summarise(self, kind: str, spell: _Spell, now: float) -> None:
        self.log.warning(
            "%s: %d more in the last %.0f s (first: %s)",
            kind,
            spell.count,
            now - spell.since,
            spell.first,
        )


def _describe(error: BaseException | str) -> str:
    if isinstance(error, str):
        return error[:300]
    text = str(error) or "(no message)"
    return f"{type(error).__name__}: {text}"[:300]
