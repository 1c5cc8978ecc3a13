"""The Jinja2 environment operator templates render in: a guarded immutable sandbox over the
stored files only, autoescaping HTML, with the `date` and `number` filters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from jinja2 import BaseLoader, Environment, StrictUndefined
from jinja2 import TemplateNotFound as JinjaNotFound
from jinja2.runtime import Context
from jinja2.utils import pass_context

from mailer.campaigns.guards import GuardedSandbox
from mailer.core.footer import SUPPORTED_LOCALES, format_date

__all__ = ["Sandbox", "environment"]


class _FilesLoader(BaseLoader):
    """Templates from the stored files only: no filesystem at render time."""

    def __init__(self, files: Mapping[str, str]) -> None:
        self._files = files

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        source = self._files.get(template)
        if source is None:
            raise JinjaNotFound(template)
        # The name as "filename" puts file names into tracebacks, for error messages.
        return source, template, lambda: True


class Sandbox(GuardedSandbox):
    """The guarded immutable sandbox with a fast path for `name.key` on plain dicts."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        # The stock path tries getattr() first and catches an AttributeError for every
        # `sender.business_name` (~2 µs each, half the sandbox's cost per message). For a plain
        # dict and a name that is not a dict attribute that lookup always fails, so going
        # straight to the item gives the same result.
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


_DICT_ATTRIBUTES = frozenset(dir(dict))


def environment(sources: Mapping[str, str], max_output: int | None) -> Sandbox:
    # Immutable sandbox: operator templates must not reach Python internals nor mutate the
    # render inputs (a template calling attributes.update() would change the archive).
    env = Sandbox(
        max_output=max_output,
        loader=_FilesLoader(sources),
        autoescape=_autoescape,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
        cache_size=-1,
    )
    env.filters["date"] = _date_filter
    env.filters["number"] = _number_filter
    return env


def _autoescape(name: str | None) -> bool:
    return name is not None and name.endswith((".html", ".htm"))


@pass_context
def _date_filter(context: Context, value: Any, locale: str | None = None) -> str:
    """`{{ attributes.next_service | date }}`: a date in words in the message's locale."""
    chosen = locale or context.get("locale") or "en"
    if chosen not in SUPPORTED_LOCALES:
        chosen = "en"
    if not isinstance(value, str | date):
        raise TypeError(f"date filter expects a date or an ISO 8601 string, got {value!r}")
    return _long_date(value, chosen)


@lru_cache(maxsize=4096)
def _long_date(value: str | date, locale: str) -> str:
    # The same few hundred dates recur across a campaign's contacts; parsing and writing one
    # out costs ~3 µs, several times per message.
    if isinstance(value, str):
        value = datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value)
    if isinstance(value, datetime):
        value = value.date()
    return format_date(value, locale)


@pass_context
def _number_filter(context: Context, value: Any) -> str:
    """`{{ attributes.mileage | number }}`: 48,200 in English, 48 200 in French."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"number filter expects a number, got {value!r}")
    grouped = f"{value:,}"
    if context.get("locale") == "fr":
        # French groups digits with a (no-break) space and uses a decimal comma.
        grouped = grouped.replace(",", "\u00a0").replace(".", ",")
    return grouped
