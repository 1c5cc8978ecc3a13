"""`mailer topics add|list`: the message topics contacts subscribe to or opt out of."""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape
from rich.table import Table

from mailer.commands.console import console, err, open_pool
from mailer.commands.oplog import logged_write
from mailer.contacts.store import ContactStore
from mailer.core.settings import Settings
from mailer.core.topics import LANGUAGES as TOPIC_LANGUAGES
from mailer.core.topics import name_problem, slug_problem, topic_name


async def topics_add(args: argparse.Namespace, settings: Settings) -> int:
    # Only the names given change: `--name-en` later keeps the French name; "" removes one.
    names = {
        lang: getattr(args, f"name_{lang}") or None
        for lang in TOPIC_LANGUAGES
        if getattr(args, f"name_{lang}") is not None
    }
    given = [("--name", args.name or "")] + [(f"--name-{k}", v or "") for k, v in names.items()]
    problems = [slug_problem(args.slug)] + [name_problem(option, v) for option, v in given]
    if problem := next((p for p in problems if p), None):
        err.print(f"[red]error:[/] {escape(problem)}", highlight=False)
        return 2
    detail = {"opt_in": args.opt_in, "names": names}
    async with (
        open_pool(settings) as pool,
        logged_write(pool, "topic.upsert", "topic", args.slug, detail) as write,
    ):
        topic_id = await ContactStore(pool).topic_upsert(
            args.slug, args.name or None, args.description, not args.opt_in,
            names=names, conn=write.conn,
        )  # fmt: skip
        write.detail.update(id=topic_id)
    console.print(f"topic {args.slug} (id {topic_id})")
    return 0


async def topics_list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_pool(settings) as pool:
        topics = await ContactStore(pool).topics_list()
    table = Table("slug", "name", *(f"name ({lang})" for lang in TOPIC_LANGUAGES), "subscription")
    for t in topics:
        # What a reader of each language sees, fallback included (mailer.core.topics).
        shown = [topic_name(t.names, t.name, t.slug, lang) for lang in TOPIC_LANGUAGES]
        table.add_row(t.slug, t.name, *shown, "opt-out" if t.default_subscribed else "opt-in")
    console.print(table)
    return 0


def register(sub: Any) -> None:
    topics = sub.add_parser("topics", help="message topics").add_subparsers(dest="t", required=True)
    add = topics.add_parser("add", help="create or update a topic")
    add.add_argument("slug")
    add.add_argument("--name", help="default name, for languages without their own (default: slug)")
    for lang in TOPIC_LANGUAGES:
        add.add_argument(
            f"--name-{lang}", help=f'the name {lang} readers see ("" removes it)', metavar="NAME"
        )
    add.add_argument("--description", default="")
    add.add_argument(
        "--opt-in",
        action="store_true",
        help="only contacts who subscribed to the topic receive it (newsletters)",
    )
    add.set_defaults(handler=topics_add)
    topics.add_parser("list").set_defaults(handler=topics_list)
