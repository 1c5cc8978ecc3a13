"""`mailer send TEMPLATE --to …` and `mailer transactional report|show|check`: one-to-one notices.

`send` is the ENQUEUE operation (mailer/transactional/enqueue.py) the HTTP API also calls:
when it prints "accepted", the message is committed; a `mailer worker` sends it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from mailer.campaigns import audience
from mailer.commands.console import console, err, open_pool
from mailer.core.consent import REASON_TEXT, Reason
from mailer.core.settings import Settings
from mailer.transactional.basis import BASIS_TEXT, Basis
from mailer.transactional.compose import check
from mailer.transactional.enqueue import (
    EnqueueError,
    archive_reproduces,
    enqueue,
    judge,
    load_template,
    status,
)
from mailer.transactional.store import TransactionalStore

__all__ = ["explain_template", "register"]

_STATES = ("queued", "sending", "sent", "deferred", "bounced", "failed", "skipped", "uncertain")


def _read_data(source: str | None) -> dict[str, Any] | str:
    """The --data JSON object (a file, or - for standard input); an error message otherwise."""
    if source is None:
        return {}
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        return f"--data {source}: {exc.strerror}"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"--data {source}: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
    if not isinstance(value, dict):
        return f"--data {source}: expected a JSON object"
    return value


async def send(args: argparse.Namespace, settings: Settings) -> int:
    """Enqueue one transactional message; 0 accepted, 1 refused, 2 bad request."""
    data = _read_data(args.data)
    if isinstance(data, str):
        err.print(f"[red]error:[/] {escape(data)}", highlight=False)
        return 2
    async with open_pool(settings) as pool:
        store = TransactionalStore.for_settings(pool, settings)
        try:
            result = await enqueue(
                store,
                template=args.template,
                to=args.to,
                data=data,
                idempotency_key=args.idempotency_key,
                locale=args.locale,
            )
        except EnqueueError as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
            return 2
    if result.refusal is not None:
        again = " (as first asked with this idempotency key)" if result.duplicate else ""
        console.print(
            f"[red]refused[/]: message {result.message_id}{again}: "
            f"{escape(result.refusal.reason)}: {escape(result.refusal.detail)}",
            highlight=False,
        )
        return 1
    if result.duplicate:
        console.print(
            f"accepted before: message {result.message_id} (same idempotency key; nothing new)",
            highlight=False,
        )
        return 0
    console.print(f"[green]accepted[/]: message {result.message_id}", highlight=False)
    if result.note:
        console.print(f"  {escape(result.note)}", highlight=False)
    return 0


async def report(args: argparse.Namespace, settings: Settings) -> int:
    """Messages since --since: by template and basis and state, refusals, opt-outs overridden."""
    now = datetime.now(UTC)
    try:
        since = now - audience.parse_duration(args.since, now=now)
    except ValueError as exc:
        err.print(f"[red]error:[/] --since: {exc}")
        return 2
    async with open_pool(settings) as pool:
        store = TransactionalStore.for_settings(pool, settings)
        lines = await store.report(since)
        notes = await store.report_notes(since)
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    refusals: dict[str, int] = defaultdict(int)
    overrode: dict[tuple[str, str], int] = defaultdict(int)
    for line in lines:
        counts[line.template, line.basis][line.status] += line.messages
        if line.refusal:
            refusals[line.refusal.partition(":")[0]] += line.messages
        if line.overrode:
            overrode[line.template, line.basis] += line.messages
    shown = [s for s in (*_STATES, "refused") if any(c.get(s) for c in counts.values())]
    table = Table(
        "template",
        "basis",
        *shown,
        "despite opt-out",
        title=f"transactional messages since {since:%Y-%m-%d %H:%M} UTC",
    )
    for (template, basis), by_state in sorted(counts.items()):
        table.add_row(
            template,
            basis,
            *(f"{by_state.get(s, 0):,}" for s in shown),
            f"{overrode.get((template, basis), 0):,}",
        )
    console.print(table)
    if refusals:
        console.print("[bold]refused or skipped before sending[/]")
        for reason, count in sorted(refusals.items()):
            known = {r.value: r for r in Reason}
            words = REASON_TEXT[known[reason]] if reason in known else reason
            console.print(f"  {reason}: {count:,} ({words})", highlight=False)
    if notes:
        console.print("[bold]sent despite an opt-out from commercial mail, and why[/]")
        for note in notes:
            console.print(
                f"  message {note.id} {note.template} to {note.email or '(erased)'}, "
                f"{note.status}: {escape(note.note)}",
                highlight=False,
            )
    return 0


async def show(args: argparse.Namespace, settings: Settings) -> int:
    """One message: state, rule, SMTP reply, and whether its archive reproduces the bytes."""
    async with open_pool(settings) as pool:
        record = await status(TransactionalStore.for_settings(pool, settings), args.id)
    if record is None:
        err.print(f"[red]error:[/] no transactional message {args.id}")
        return 2
    basis = Basis(record.basis)
    rows: list[tuple[str, str]] = [
        ("template", f"{record.template} ({record.version_name})"),
        ("basis", f"{basis.value}: {BASIS_TEXT[basis]}"),
        ("to", record.email or "(erased)"),
        ("status", record.status),
        ("refusal", record.refusal or "-"),
        ("note", record.note or "-"),
        ("idempotency key", record.idempotency_key or "-"),
        ("enqueued", f"{record.enqueued_at:%Y-%m-%d %H:%M:%S} UTC"),
        ("attempts", str(record.attempts)),
        ("smtp", f"{record.smtp_code or '-'} {record.smtp_reply or ''}".strip()),
        ("skip reason", record.skip_reason or "-"),
        ("message-id", record.message_id or "-"),
        ("sent", f"{record.sent_at:%Y-%m-%d %H:%M:%S} UTC" if record.sent_at else "-"),
    ]
    if record.replied_at is not None:
        latency = (record.replied_at - record.enqueued_at).total_seconds()
        rows.append(("enqueue to reply", f"{latency:.3f} s"))
    same = archive_reproduces(record)
    if same is not None and record.sha256 is not None:
        verdict = "reproduces the bytes sent" if same else "[red]does NOT reproduce[/]"
        rows.append(("archive", f"sha256 {bytes(record.sha256).hex()}: {verdict}"))
    table = Table("", "", show_header=False, title=f"transactional message {record.id}")
    for name, value in rows:
        table.add_row(name, value if name == "archive" else escape(value))
    console.print(table)
    return 0


async def check_template(args: argparse.Namespace, settings: Settings) -> int:
    """Lint a transactional template per its basis: 0 when it may be sent."""
    try:
        template = load_template(Path(settings.transactional.templates_dir), args.template)
    except EnqueueError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        return 2
    problems = check(template, max_message_bytes=settings.engine.max_message_bytes)
    if problems:
        for problem in problems:
            console.print(f"[red]✗[/] {escape(str(problem))}", highlight=False)
        console.print(f"{args.template}: {len(problems)} problem(s); not sendable")
        return 1
    console.print(
        f"[green]✓[/] {args.template} ({template.basis.value}: {BASIS_TEXT[template.basis]})",
        highlight=False,
    )
    return 0


async def explain_template(settings: Settings, email: str, template_name: str) -> int:
    """`contacts explain EMAIL --template T`: would a message of T go to this address, and why."""
    async with open_pool(settings) as pool:
        store = TransactionalStore.for_settings(pool, settings)
        try:
            template = load_template(store.templates_dir, template_name)
            judged = await judge(store, template, email)
        except EnqueueError as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
            return 2
    decision = judged.decision
    if decision.allowed:
        console.print(f"[green]would be sent[/] ({template_name}): {escape(decision.detail)}")
        if decision.note():
            console.print(f"  {escape(decision.note() or '')}", highlight=False)
        if judged.facts.contact_id is None:
            console.print("  no contact yet: one would be created, with no consent recorded")
    else:
        assert decision.refused is not None
        console.print(
            f"[red]refused[/] ({template_name}, {decision.refused.value}): "
            f"{escape(decision.detail)}",
            highlight=False,
        )
    return 0


def register(sub: Any) -> None:
    """`send` and the `transactional` group."""
    snd = sub.add_parser("send", help="enqueue one transactional message (a notice, a recall…)")
    snd.add_argument("template", help="a template of transactional.templates_dir (no suffix)")
    snd.add_argument("--to", required=True, help="the recipient's address")
    snd.add_argument("--data", help="JSON object file with the template's values (- for stdin)")
    snd.add_argument("--idempotency-key", help="the same key again returns the first message")
    snd.add_argument("--locale", help="fr or en (default: the contact's, else the template's)")
    snd.set_defaults(handler=send)

    group = sub.add_parser("transactional", help="transactional messages").add_subparsers(
        dest="tx", required=True
    )
    rep = group.add_parser("report", help="messages by template, basis and state")
    rep.add_argument("--since", default="7d", help="period: 7d, 2w, 1m (default 7d)")
    rep.set_defaults(handler=report)
    one = group.add_parser("show", help="one message: state, rule, SMTP reply, archive")
    one.add_argument("id", type=int)
    one.set_defaults(handler=show)
    lint = group.add_parser("check", help="lint a transactional template per its basis")
    lint.add_argument("template")
    lint.set_defaults(handler=check_template)
