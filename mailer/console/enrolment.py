"""Adding an operator: the one operation `mailer operators add` and the operators page share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mailer.compliance.logged import logged_write
from mailer.compliance.store import ActorKind
from mailer.console.accounts import Role, hash_password, new_token, password_problem, token_hash
from mailer.console.store import ConsoleStore
from mailer.core.settings import Settings


class EnrolmentError(ValueError):
    """The operator cannot be added; the message says why."""


@dataclass(frozen=True)
class Enrolled:
    operator_id: int
    setup_link: str | None  # None when a password was given


async def add_operator(
    store: ConsoleStore,
    settings: Settings,
    email: str,
    role: Role,
    *,
    locale: str = "en",
    password: str | None = None,
    actor: str,
    actor_kind: ActorKind = "operator",
) -> Enrolled:
    """A new operator with `password`, or with a one-time link to set one; logged as done
    by `actor` (an operator's login, or the system user running the CLI) in the same
    transaction: the account and its log line commit together, or neither does."""
    email = email.strip().lower()
    if "@" not in email:
        raise EnrolmentError(f"{email!r} is not an email address")
    c = settings.console
    link: str | None = None
    password_hash: str | None = None
    setup_token_hash: bytes | None = None
    setup_expires_at: datetime | None = None
    if password is not None:
        problem = password_problem(password)
        if problem:
            raise EnrolmentError(f"password refused: {problem.replace('_', ' ')} (12+ characters)")
        # Hashed before the transaction: argon2 takes a while, the connection need not wait.
        password_hash = hash_password(password)
    else:
        token = new_token()
        setup_token_hash = token_hash(token)
        setup_expires_at = datetime.now(UTC) + timedelta(hours=c.setup_link_hours)
        link = f"{c.base_url.rstrip('/')}/setup/{token}"
    how = "password" if password is not None else "link"
    said = {"role": role.label, "by": how}
    async with logged_write(
        store.pool, actor_kind, actor, "operator.add", "operator", email, said
    ) as w:
        found = await store.operator_add(
            email,
            role,
            locale,
            password_hash=password_hash,
            setup_token_hash=setup_token_hash,
            setup_expires_at=setup_expires_at,
            conn=w.conn,
        )
        if found is None:
            raise EnrolmentError(f"{email} already has an account")
    return Enrolled(found, link)
