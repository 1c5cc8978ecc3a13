"""A transactional template file (`templates/transactional/<name>.toml`): parse and validate.

The campaign file's shape (mailer/campaigns/campaign_file.py validates the shared fields, so a
subject, a sender or a locale is held to one set of rules), plus the message's legal basis and
without what only campaigns have (slug, audience, schedule, throttle):

```toml
basis = "transaction"        # quote | transaction | warranty_recall_safety |
                             # account_information | employment | product_update |
                             # legal_notice | commercial (mailer/transactional/basis.py)
name = "Parts received"      # for the operator; the template's name is the file's
topic = "service"            # commercial only: the topic whose opt-outs and consent apply
policy = "casl"              # commercial only
subject = { fr = "…", en = "…" }
from_name = "…"
from_address = "…"
reply_to = "…"               # optional
locales = ["fr", "en"]
timezone = "America/Toronto"
tracking = false             # no pixel, no click tracking (true is refused for now)

[sender]                     # CASL s.6(2)(b): always
business_name = "…"
postal_address = "…"
phone = "…"

[sample]                     # what `mailer transactional check` renders
name = "…"
email = "…"
data = { part = "…" }
```

The template files are `<name>.html` (and `.txt`, `.fr.html`…) beside the TOML file, with the
same sandbox as campaigns; the message's data is `data` in the template.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailer.campaigns.campaign_file import from_mapping
from mailer.campaigns.definition import CampaignDefinition, CampaignFileError
from mailer.campaigns.template_set import TemplateFileError, TemplateSet
from mailer.transactional.basis import Basis

__all__ = ["TRANSACTIONAL_TOPIC", "TransactionalTemplate", "load", "parse"]

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# The campaign machinery wants a topic: exempt messages name this one (Feedback-ID, never a
# topic row; an exempt message is not about any topic a person can opt out of).
TRANSACTIONAL_TOPIC = "transactional"
_OWN_KEYS = frozenset({"basis"})
_SHARED_KEYS = frozenset(
    {
        "name",
        "topic",
        "policy",
        "subject",
        "from_name",
        "from_address",
        "reply_to",
        "locales",
        "timezone",
        "tracking",
        "sender",
        "sample",
    }
)


@dataclass(frozen=True, slots=True)
class TransactionalTemplate:
    """A validated transactional template: its basis, its campaign-shaped definition, files."""

    name: str
    basis: Basis
    definition: CampaignDefinition
    files: TemplateSet

    def to_json(self) -> dict[str, Any]:
        """What transactional_messages.definition keeps (from_json reads it back)."""
        return {"basis": self.basis.value, "campaign": self.definition.to_json()}

    @classmethod
    def from_json(
        cls, name: str, data: Mapping[str, Any], files: TemplateSet
    ) -> TransactionalTemplate:
        """A template as enqueued, from its stored definition and version files."""
        definition = from_mapping(data["campaign"], templates_dir=None, source=name)
        return cls(name, Basis(data["basis"]), definition, files)


def load(templates_dir: Path, name: str) -> TransactionalTemplate:
    """Read `<name>.toml` and its template files; errors name the file and field."""
    if not _NAME.fullmatch(name):
        raise TemplateFileError(f"{name!r}: not a template name ([a-z0-9_-], no suffix)")
    path = templates_dir / f"{name}.toml"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TemplateFileError(f"{path}: no such transactional template") from None
    except OSError as exc:
        raise TemplateFileError(f"{path}: {exc.strerror}") from None
    return parse(text, name, templates_dir, source=str(path))


def parse(text: str, name: str, templates_dir: Path, *, source: str) -> TransactionalTemplate:
    """Validate the TOML of template `name` (its files read from templates_dir)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CampaignFileError(source, [f"not valid TOML: {exc}"]) from None
    problems = [f"{key}: unknown field" for key in sorted(set(raw) - _OWN_KEYS - _SHARED_KEYS)]
    basis: Basis | None = None
    try:
        basis = Basis(str(raw.get("basis", "")))
    except ValueError:
        problems.append(f"basis: required, one of {', '.join(b.value for b in Basis)}")
    commercial = basis is Basis.COMMERCIAL
    if commercial and "topic" not in raw:
        problems.append("topic: required for a commercial template (its opt-outs apply)")
    for key in ("topic", "policy"):
        if key in raw and not commercial:
            problems.append(f'{key}: only for basis = "commercial" (no consent rules apply)')
    if raw.get("tracking", False) is not False:
        # Opens and clicks are recorded per campaign (events.campaign_id, links by campaign):
        # a transactional message has none, so it cannot be tracked yet. Refused rather than
        # sent with links that would not resolve.
        problems.append("tracking: not available for transactional templates (use false)")
    shared = {k: v for k, v in raw.items() if k in _SHARED_KEYS}
    sample = dict(shared.get("sample", {})) if isinstance(shared.get("sample"), dict) else {}
    if "data" in sample:  # the campaign sample's attributes are this template's data
        sample["attributes"] = sample.pop("data")
    mapping = {
        **shared,
        "slug": name.replace("_", "-"),
        "name": shared.get("name", name),
        "topic": shared.get("topic", TRANSACTIONAL_TOPIC),
        "template": name,
        "tracking": shared.get("tracking", False),
        "sample": sample,
    }
    try:
        definition = from_mapping(mapping, templates_dir=templates_dir, source=source)
    except CampaignFileError as exc:
        problems += exc.problems
        raise CampaignFileError(source, problems) from None
    if problems or basis is None:
        raise CampaignFileError(source, problems)
    return TransactionalTemplate(name, basis, definition, TemplateSet.load(templates_dir, name))


def names(templates_dir: Path) -> list[str]:
    """The templates of the folder: one `<name>.toml` each, by name."""
    return sorted(p.stem for p in templates_dir.glob("*.toml") if not p.name.startswith("."))
