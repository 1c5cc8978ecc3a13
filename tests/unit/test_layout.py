"""The floor plan holds: packages by role, dependencies pointing one way, SQL in stores.

core ← db ← (contacts, campaigns, report, optouts) ← (send, compliance, inbound) ←
(commands, demo); the tracker borrows only core, db and the shared opt-out. Read from the
code's own imports (ast), so a new import that breaks the plan fails here, not in review.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailer.db.queries import Queries

ROOT = Path(__file__).resolve().parents[2]
ROLES = (
    "contacts",
    "campaigns",
    "send",
    "compliance",
    "report",
    "optouts",
    "inbound",
    "webhooks",
    "api",
    "console",
    "transactional",
    "forms",
)

# Which packages each package may import (besides itself); anything else is a wrong arrow.
ALLOWED: dict[str, set[str]] = {
    "mailer.core": set(),
    "mailer.db": set(),
    "mailer.contacts": {"mailer.core", "mailer.db"},
    "mailer.campaigns": {"mailer.core", "mailer.db"},
    "mailer.report": {"mailer.core", "mailer.db"},
    # Opt-outs, written once for every door (tracker pages and one-click, inbound mailto).
    "mailer.optouts": {"mailer.core", "mailer.db"},
    # Inbound mail withdraws consent through the shared opt-out, and the reputation guard
    # pauses campaigns through the campaigns' own lifecycle query.
    "mailer.inbound": {"mailer.core", "mailer.db", "mailer.optouts", "mailer.campaigns"},
    # Sign-up forms record grants through the shared opt-out's contact lock (one lock for
    # every consent change of a contact) and queue their confirmation mail on the
    # transactional lane (issue 18), never behind a campaign.
    "mailer.forms": {"mailer.core", "mailer.db", "mailer.optouts", "mailer.transactional"},
    # Transactional messages render and lint with the campaigns' machinery, and a commercial
    # one is judged by the contacts' consent rules.
    "mailer.transactional": {"mailer.core", "mailer.db", "mailer.campaigns", "mailer.contacts"},
    # The engine re-checks the audience and composes campaigns' messages; its transactional
    # lane claims and composes transactional ones.
    "mailer.send": {"mailer.core", "mailer.db", "mailer.campaigns", "mailer.transactional"},
    # The archive reproduces campaigns' messages; the audit names the campaign.
    "mailer.compliance": {"mailer.core", "mailer.db", "mailer.campaigns"},
    # Outgoing webhooks: the outbox is written by triggers and by the roles' own SQL; the
    # dispatcher reads it and the contact it names.
    "mailer.webhooks": {"mailer.core", "mailer.db"},
    # The operator API is a face of the roles' operations (one implementation under the
    # CLI, the API and the console), and logs every write in the compliance operator log.
    "mailer.api": {
        "mailer.core",
        "mailer.db",
        "mailer.contacts",
        "mailer.campaigns",
        "mailer.optouts",
        "mailer.compliance",
        "mailer.report",
        "mailer.webhooks",
        "mailer.transactional",
    },
    # The browser console shows what the roles decide, through their own functions and stores
    # (no rule of its own): campaigns, contacts, report, compliance (data rights, operator
    # log), and the API's keys and webhook endpoints (listed for admins); sign-up forms and
    # transactional messages through their own checks and stores (the intake pages).
    "mailer.console": {
        "mailer.core",
        "mailer.db",
        "mailer.campaigns",
        "mailer.contacts",
        "mailer.report",
        "mailer.compliance",
        "mailer.api",
        "mailer.webhooks",
        "mailer.forms",
        "mailer.transactional",
    },
    "mailer.commands": {"mailer.core", "mailer.db", *(f"mailer.{r}" for r in ROLES)}
    | {"mailer.demo", "tracker"},
    "mailer.demo": {"mailer.core", "mailer.db", *(f"mailer.{r}" for r in ROLES), "tracker"},
    "mailer": {"mailer.commands"},  # python -m mailer
    # The tracker's opt-outs are the shared operation inbound's mailto unsubscribe also uses
    # (same ledger rows, same metric); mailer.optouts imports only core and db.
    # Sign-up forms are hosted by the tracker (the recipient-facing server), which calls the
    # forms' own operations (request_signup, confirm_signup) so the API can call the same.
    "tracker": {"mailer.core", "mailer.db", "mailer.optouts", "mailer.forms"},
}
# Third-party packages the pure core may use: values and rules, no I/O. aiosmtplib for its
# exception types only (outcome.py classifies them, in one place); cryptography signs DKIM.
CORE_DEPENDENCIES = {"email_validator", "cryptography", "aiosmtplib"}


def modules() -> Iterator[tuple[str, Path]]:
    for top in ("mailer", "tracker"):
        for path in sorted((ROOT / top).rglob("*.py")):
            yield ".".join(path.relative_to(ROOT).with_suffix("").parts), path


def package_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "mailer" and len(parts) > 2:
        return ".".join(parts[:2])
    if parts[0] == "mailer" and len(parts) == 2 and (ROOT / "mailer" / parts[1]).is_dir():
        return module
    return parts[0]


def imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            # `from mailer import core` names a package, not a module of mailer.
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def project_imports(path: Path) -> set[str]:
    found = set()
    for name in imports(path):
        if name.split(".")[0] not in ("mailer", "tracker"):
            continue
        target = package_of(name)
        if target == "mailer" and name != "mailer":
            continue  # `from mailer.x import y` yields mailer.x.y too; the package is enough
        found.add(target)
    return found


@pytest.mark.parametrize(("module", "path"), list(modules()), ids=lambda v: str(v))
def test_every_import_points_down_the_floor_plan(module: str, path: Path) -> None:
    own = package_of(module)
    wrong = project_imports(path) - ALLOWED[own] - {own}
    assert not wrong, f"{module} imports {sorted(wrong)}"


def test_the_core_imports_only_the_standard_library_and_its_declared_pure_dependencies() -> None:
    for module, path in modules():
        if package_of(module) != "mailer.core":
            continue
        for name in imports(path):
            top = name.split(".")[0]
            assert (
                top in sys.stdlib_module_names
                or top in CORE_DEPENDENCIES
                or name.startswith("mailer.core")
                or top == "__future__"
            ), f"{module} imports {name}"


def test_only_stores_and_the_db_package_import_asyncpg() -> None:
    for module, path in modules():
        if module.endswith(".store") or package_of(module) == "mailer.db":
            continue
        assert not any(n.split(".")[0] == "asyncpg" for n in imports(path)), module


def test_the_package_graph_has_no_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for module, path in modules():
        graph.setdefault(package_of(module), set()).update(
            project_imports(path) - {package_of(module)}
        )
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", " -> ".join([*trail, node])
        state[node] = "open"
        for target in graph.get(node, ()):
            visit(target, [*trail, node])
        state[node] = "done"

    for node in graph:
        visit(node, [])


_USE = re.compile(r"""\bQ\(\s*["']([a-z_0-9]+)["']""")
_SQL_FILES = {
    "mailer/contacts/store.py": ("mailer.contacts", "contacts.sql"),
    "mailer/campaigns/store.py": ("mailer.campaigns", "campaigns.sql"),
    "mailer/send/store.py": ("mailer.send", "send.sql"),
    "mailer/compliance/store.py": ("mailer.compliance", "compliance.sql"),
    "mailer/report/store.py": ("mailer.report", "report.sql"),
    "mailer/optouts/store.py": ("mailer.optouts", "optouts.sql"),
    "mailer/inbound/store.py": ("mailer.inbound", "inbound.sql"),
    "mailer/forms/store.py": ("mailer.forms", "forms.sql"),
    "mailer/api/store.py": ("mailer.api", "api.sql"),
    "mailer/webhooks/store.py": ("mailer.webhooks", "webhooks.sql"),
    "mailer/db/migrations.py": ("mailer.db", "db.sql"),
}


@pytest.mark.parametrize("store", sorted(_SQL_FILES))
def test_each_store_asks_only_for_queries_its_file_has_and_uses_them_all(store: str) -> None:
    package, filename = _SQL_FILES[store]
    queries = Queries(package, filename)
    # The audience module composes campaigns.sql's fragments for the campaign store.
    users = [ROOT / store]
    if package == "mailer.campaigns":
        users.append(ROOT / "mailer/campaigns/audience.py")
    text = "\n".join(p.read_text(encoding="utf-8") for p in users)
    used = set(_USE.findall(text))
    # Fragments are asked for by a computed name (audience_fragment_<marker>).
    dynamic = {n for n in queries.names if n.startswith(("audience_fragment_", "audience_range_"))}
    spliced = set(re.findall(r"""Q\(\s*["']([a-z_0-9]+)["']\)\.replace""", text))
    marker_fills = set(re.findall(r""":\w+", Q\(["']([a-z_0-9]+)["']\)""", text))
    assert used - queries.names == set(), f"{store} asks for queries {filename} lacks"
    unused = queries.names - used - dynamic - spliced - marker_fills
    unused -= {n for n in queries.names if f'"{n}"' in text}
    assert unused == set(), f"{filename} holds queries nothing runs"
