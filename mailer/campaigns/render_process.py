"""One render process under the limits: starting it, talking to it, and reading its death.

Render processes are forked from multiprocessing's fork server, never from the worker,
which holds an event loop, sockets and threads: a fork from the server takes ~15 ms where
a spawn takes ~0.7 s (measured), which counts each time a process killed on a limit is
replaced, and for the one-off process `campaign check` lints in (lint_in_process).

A process caps its own address space (mailer.limits) and ignores SIGINT and SIGTERM: the
worker decides when it stops. It leaves with the worker, whatever way the worker goes
(kill -9 included), through a lifeline pipe only the worker writes to. A counter in
shared memory names the item in hand, so when a process dies the worker knows which
message (or lint sample) killed it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import multiprocessing
import os
import signal
import threading
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from mailer.campaigns import lint
from mailer.campaigns.campaign_file import from_mapping
from mailer.campaigns.limits import EXIT_MEMORY, RenderLimits, reason_for_exit, timed_hard
from mailer.campaigns.message import CampaignContent
from mailer.campaigns.render import LimitError, Renderer
from mailer.campaigns.template_set import TemplateSet

__all__ = ["RenderProcess", "detach", "lint_in_process"]


def detach(lifeline: Connection, limits: RenderLimits) -> None:
    """First thing in a render process: leave signals to the worker, follow it, cap memory."""
    # A terminal's Ctrl-C or systemd's SIGTERM reach the whole process group, and a render
    # process dying first would fail the batch in hand.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_worker, args=(lifeline,), daemon=True).start()
    limits.apply_to_process()


def _exit_with_worker(lifeline: Connection) -> None:
    # The worker holds the other end and never writes: EOF means it closed the process or
    # died, and a process busy with a runaway render follows it at once.
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv_bytes()
    os._exit(0)


def _context() -> Any:
    context = multiprocessing.get_context("forkserver")
    # Imported once in the fork server, so a new render process starts with them loaded.
    context.set_forkserver_preload(["mailer.render_pool"])
    return context


class RenderProcess:
    """A render process running `target(conn, lifeline, progress, *args)`."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        context = _context()
        self.conn, child_end = context.Pipe()
        lifeline_end, self._lifeline = context.Pipe(duplex=False)
        self.progress = context.RawValue("q", -1)  # the item in hand; -1: none
        self.process = context.Process(
            target=target,
            args=(child_end, lifeline_end, self.progress, *args),
            name="mailer-render",
            daemon=True,
        )
        self.process.start()
        _LIVE.add(self)
        # Only the child holds these now, so its death reads as EOF here.
        child_end.close()
        lifeline_end.close()

    @property
    def pid(self) -> int | None:
        return int(self.process.pid) if self.process.pid is not None else None

    def exchange(self, request: Any, count: int) -> tuple[list[Any], bool]:
        """Send a request, collect `count` items sent back in lists (blocking: run it in a
        thread); anything but a list ends it early. The items, and whether the process died."""
        self.progress.value = -1
        items: list[Any] = []
        try:
            self.conn.send(request)
            while len(items) < count:
                received = self.conn.recv()
                if not isinstance(received, list):
                    return [received], False
                items += received
        except (EOFError, OSError):
            return items, True
        return items, False

    def receive_one(self) -> tuple[Any, bool]:
        """One message (blocking); whether the process died instead."""
        try:
            return self.conn.recv(), False
        except (EOFError, OSError):
            return None, True

    def kill(self) -> None:
        if self.process.exitcode is None:
            self.process.kill()

    def close(self, timeout: float) -> int | None:
        """Let the process end (it exits on EOF), kill it if it does not; its exit status."""
        self.conn.close()
        self._lifeline.close()
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
        exitcode: int | None = self.process.exitcode
        return exitcode


_LIVE: weakref.WeakSet[RenderProcess] = weakref.WeakSet()


@atexit.register
def _kill_left_over() -> None:
    # Registered after multiprocessing's own exit hook, so it runs first: that hook joins
    # every child, and a render process (which ignores SIGTERM, and exits on EOF of a pipe
    # this process still holds) would keep it waiting for ever.
    for process in list(_LIVE):
        process.kill()


# ---------------------------------------------------------------- campaign check


def _lint(
    conn: Connection,
    lifeline: Connection,
    progress: Any,
    content: CampaignContent,
    limits: RenderLimits,
) -> None:
    """A one-off process: lint a campaign's samples, one at a time, under the limits."""
    try:
        detach(lifeline, limits)
        definition = from_mapping(content.definition, templates_dir=None)
        renderer = Renderer(
            TemplateSet(content.template, content.files), max_output=limits.max_message_bytes
        )
        problems: list[lint.LintProblem] = []
        for index, sample in enumerate(lint.sample_inputs(definition)):
            progress.value = index
            problems += timed_hard(
                limits,
                lint.lint,
                renderer,
                definition,
                [sample],
                max_message_bytes=limits.max_message_bytes,
            )
            if any(p.element == "limit" for p in problems):
                break  # one is enough to refuse the campaign; each could cost the same again
        conn.send(problems)
    except LimitError as exc:  # over the time limit outside the template itself
        conn.send(exc)
    except MemoryError:
        os._exit(EXIT_MEMORY)


async def lint_in_process(content: CampaignContent, limits: RenderLimits) -> list[lint.LintProblem]:
    """Lint a campaign's definition and templates in a one-off process, under limits.

    A sample that kills the process is reported, naming the template and the limit; the
    samples after it are not rendered (each could cost the same again).
    """
    process = await asyncio.to_thread(RenderProcess, _lint, content, limits)
    try:
        answer, died = await asyncio.to_thread(process.receive_one)
    except BaseException:
        process.kill()
        raise
    at = process.progress.value
    exitcode = await asyncio.to_thread(process.close, 5.0)
    if not died and isinstance(answer, list):
        return answer
    definition = from_mapping(content.definition, templates_dir=None)
    samples = lint.sample_inputs(definition)
    sample = samples[max(0, min(at, len(samples) - 1))]
    detail = str(answer) if not died else limits.killed_detail(reason_for_exit(exitcode))
    return [lint.limit_problem(sample, f"template {content.template!r}: {detail}")]
