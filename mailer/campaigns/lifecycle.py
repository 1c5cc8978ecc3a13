"""A campaign's life: create from a file, lint, freeze the audience, run, pause, resume, cancel.

    draft ──► scheduled ──► running ⇄ paused ──► done
      │           │            │         │
      └───────────┴────────────┴─────────┴──► cancelled

Transitions are checked here and again by the UPDATE that performs them
(which only matches the expected current state), so two terminals racing
cannot move a campaign along an edge that does not exist.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mailer.campaigns import deliverability, lint
from mailer.campaigns.campaign_file import from_mapping, load, parse
from mailer.campaigns.definition import CampaignDefinition, CampaignFileError
from mailer.campaigns.limits import RenderLimits
from mailer.campaigns.message import CampaignContent
from mailer.campaigns.render_process import lint_in_process
from mailer.campaigns.rows import Campaign, FreezeResult
from mailer.campaigns.store import CampaignStore, Conn
from mailer.campaigns.template_set import TemplateFileError, TemplateSet
from mailer.core.settings import Settings

TRANSITIONS: dict[str, frozenset[str]] = {
    "draft": frozenset({"scheduled", "running", "cancelled"}),
    "scheduled": frozenset({"running", "cancelled"}),
    "running": frozenset({"paused", "done", "cancelled"}),
    "paused": frozenset({"running", "cancelled"}),
    "done": frozenset(),
    "cancelled": frozenset(),
}


class CampaignError(ValueError):
    """An operator request that cannot be honoured; the message says why."""


def sources_of(target: str) -> list[str]:
    """The states a campaign may move to `target` from."""
    return sorted(state for state, targets in TRANSITIONS.items() if target in targets)


async def create(
    store: CampaignStore,
    path: Path,
    templates_dir: Path,
    *,
    slug: str | None = None,
    conn: Conn | None = None,
) -> tuple[int, CampaignDefinition]:
    """Create a draft campaign from a campaign file (optionally under another slug); with
    `conn`, in its transaction (the CLI's, with its operator-log line)."""
    definition = load(path, templates_dir)
    if slug is not None:
        definition = dataclasses.replace(definition, slug=slug)
    return await create_from_definition(store, definition, templates_dir, str(path), conn=conn)


async def create_from_text(
    store: CampaignStore,
    text: str,
    templates_dir: Path,
    source: str = "campaign file",
    *,
    conn: Conn | None = None,
) -> tuple[int, CampaignDefinition]:
    """Create a draft campaign from a campaign file's text (the console's editor or upload,
    the API's request body; on `conn`, in the caller's transaction, when given)."""
    definition = parse(text, templates_dir=templates_dir, source=source)
    return await create_from_definition(store, definition, templates_dir, source, conn=conn)


@dataclass(frozen=True)
class TextLint:
    """A campaign file's text checked before it exists: its file problems, else its lint."""

    definition: CampaignDefinition | None
    file_problems: list[str]
    problems: list[lint.LintProblem]

    @property
    def ok(self) -> bool:
        return not self.file_problems and not self.problems


async def lint_text(
    text: str,
    templates_dir: Path,
    limits: RenderLimits | None = None,
    source: str = "campaign file",
) -> TextLint:
    """Validate a campaign file's text and lint its samples, as `campaign check` would."""
    try:
        definition = parse(text, templates_dir=templates_dir, source=source)
        templates = TemplateSet.load(templates_dir, definition.template)
    except CampaignFileError as exc:
        return TextLint(None, exc.problems, [])
    except TemplateFileError as exc:
        return TextLint(None, [str(exc)], [])
    content = CampaignContent(definition.to_json(), templates.name, dict(templates.files), {})
    return TextLint(definition, [], await lint_in_process(content, limits or RenderLimits()))


async def create_from_definition(
    store: CampaignStore,
    definition: CampaignDefinition,
    templates_dir: Path,
    source: str,
    *,
    conn: Conn | None = None,
) -> tuple[int, CampaignDefinition]:
    path = source
    topics = await store.topic_ids()
    if definition.topic not in topics:
        raise CampaignError(
            f"{path}: topic: unknown topic {definition.topic!r} "
            "(create it with `mailer topics add`)"
        )
    if await store.campaign_by_slug(definition.slug) is not None:
        raise CampaignError(f"{path}: slug: a campaign {definition.slug!r} already exists")
    templates = TemplateSet.load(templates_dir, definition.template)
    version = await store.template_version_upsert(
        templates.name, bytes.fromhex(templates.sha256()), dict(templates.files), conn
    )
    campaign_id = await store.campaign_create(
        definition.to_json(),
        topic_id=topics[definition.topic],
        template_version_id=version,
        scheduled_at=definition.schedule,
        conn=conn,
    )
    if campaign_id is None:  # created meanwhile by someone else
        raise CampaignError(f"{path}: slug: a campaign {definition.slug!r} already exists")
    return campaign_id, definition


@dataclass(frozen=True)
class Launch:
    campaign_id: int
    status: str
    freeze: FreezeResult


async def load_definition(store: CampaignStore, slug: str) -> tuple[Campaign, CampaignDefinition]:
    row = await store.campaign_by_slug(slug)
    if row is None:
        raise CampaignError(f"no campaign {slug!r}")
    return row, from_mapping(row.definition, templates_dir=None)


async def check(
    store: CampaignStore, slug: str, limits: RenderLimits | None = None
) -> list[lint.LintProblem]:
    """Render the campaign for a sample of every consent kind; what each lacks.

    In a render process under the engine's limits (default: the settings' defaults): a
    template that runs away for the sample is reported, naming the limit, not waited for.
    """
    row, _ = await load_definition(store, slug)
    return await lint_campaign(store, row, limits)


async def lint_campaign(
    store: CampaignStore, row: Campaign, limits: RenderLimits | None
) -> list[lint.LintProblem]:
    return await lint_in_process(await content_of(store, row), limits or RenderLimits())


async def content_of(store: CampaignStore, row: Campaign) -> CampaignContent:
    """What composing the campaign's messages needs: its definition and template files."""
    templates = await store.campaign_templates(row.id)
    return CampaignContent(row.definition, templates.name, dict(templates.files), {})


def sending_setup(
    settings: Settings, slug: str, definition: CampaignDefinition
) -> list[deliverability.Finding]:
    """The sending-setup findings (deliverability.py); CampaignError if one is fatal.

    What `campaign send`, the console's launch and the API's send all refuse on.
    """
    findings = deliverability.check(settings, definition)
    fatal = [str(f) for f in findings if f.fatal]
    if fatal:
        raise CampaignError(
            f"campaign {slug!r} does not start: fix its sending setup first: " + "; ".join(fatal)
        )
    return findings


async def launch(
    store: CampaignStore,
    slug: str,
    at: datetime,
    limits: RenderLimits | None = None,
    *,
    conn: Conn | None = None,
) -> Launch:
    """Lint, freeze the audience into deliveries, and start (or schedule) the campaign.

    The freeze commits on its own connections; the status change, on `conn` when given
    (the caller's transaction, which logs it). A crash between the two leaves the campaign
    unlaunched with its rows, and launching again completes it (store.freeze_audience).
    """
    row, definition = await load_definition(store, slug)
    status = row.status
    if status not in ("draft", "scheduled", "paused", "running"):
        raise CampaignError(f"campaign {slug!r} is {status}: it cannot be sent again")
    problems = await lint_campaign(store, row, limits)
    if problems:
        listed = "\n  ".join(str(p) for p in problems)
        raise CampaignError(f"campaign {slug!r} does not start: its messages lack\n  {listed}")
    campaign_id = row.id
    try:
        frozen = await store.freeze_audience(campaign_id, at)
    except LookupError as exc:  # cancelled or finished since we looked
        raise CampaignError(f"campaign {slug!r} cannot be sent: {exc}") from None
    target = (
        "scheduled" if definition.schedule is not None and definition.schedule > at else "running"
    )
    if status != target and status not in ("running", "paused"):
        if not await store.campaign_set_status(campaign_id, sources_of(target), target, conn):
            raise CampaignError(f"campaign {slug!r} changed state meanwhile; try again")
        status = target
    return Launch(campaign_id, status, frozen)


async def transition(
    store: CampaignStore, slug: str, target: str, *, conn: Conn | None = None
) -> None:
    """Pause, resume (running), or cancel a campaign; takes effect within one batch.

    With `conn`, in that connection's transaction (with the caller's operator-log line).
    """
    campaign_id = await _campaign_id(store, slug)
    if not await store.campaign_set_status(campaign_id, sources_of(target), target, conn):
        row = await store.campaign_by_slug(slug)
        current = row.status if row else "missing"
        raise CampaignError(f"campaign {slug!r} is {current}: it cannot become {target}")


async def _campaign_id(store: CampaignStore, slug: str) -> int:
    spec = await store.campaign_spec(slug)
    if spec is None:
        raise CampaignError(f"no campaign {slug!r}")
    return spec.id
