"""Reading a decoded campaign file field by field, collecting every problem as `field: reason`.

The operator sees all problems in one go, each naming its field (`sender.postal_address:
required`); a bad value yields a neutral default so the remaining fields are still checked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

from mailer.core.addresses import InvalidAddress, normalise
from mailer.core.consent import Channel, Policy

__all__ = ["CONTROL", "FieldChecker"]

# Header values from the file: CR/LF would inject headers, other controls break parsers.
CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
_E = TypeVar("_E", Policy, Channel)


class FieldChecker:
    """Collects `field: reason` problems so the operator sees them all in one go."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, name: str, reason: str) -> None:
        self.problems.append(f"{name}: {reason}")

    def unknown(self, raw: Mapping[str, Any], allowed: frozenset[str], prefix: str) -> None:
        # A typo must not silently fall back to a default (same rule as mailer.core.settings).
        for key in sorted(set(raw) - allowed):
            self.problem(f"{prefix}{key}", "unknown field")

    def text(
        self, raw: Mapping[str, Any], key: str, *, prefix: str = "", header: bool = True
    ) -> str:
        value = raw.get(key)
        name = f"{prefix}{key}"
        if value is None or (isinstance(value, str) and not value.strip()):
            self.problem(name, "required")
            return ""
        if not isinstance(value, str):
            self.problem(name, f"expected a string, got {value!r}")
            return ""
        if header and CONTROL.search(value):
            self.problem(name, "must not contain line breaks or control characters")
        return value.strip()

    def optional_text(self, raw: Mapping[str, Any], key: str, prefix: str) -> str | None:
        if raw.get(key) in (None, ""):
            return None
        return self.text(raw, key, prefix=prefix) or None

    def pattern(self, raw: Mapping[str, Any], key: str, regex: re.Pattern[str], hint: str) -> str:
        value = self.text(raw, key)
        if value and not regex.fullmatch(value):
            self.problem(key, f"{value!r} is not valid ({hint})")
        return value

    def address(self, raw: Mapping[str, Any], key: str, *, required: bool) -> str | None:
        if not required and raw.get(key) in (None, ""):
            return None
        value = self.text(raw, key)
        if not value:
            return None
        try:
            return normalise(value)
        except InvalidAddress as exc:
            self.problem(key, f"not a valid address: {exc}")
            return None

    def boolean(self, raw: Mapping[str, Any], key: str, default: bool) -> bool:
        value = raw.get(key, default)
        if not isinstance(value, bool):
            self.problem(key, f"expected true or false, got {value!r}")
            return default
        return value

    def positive_int(self, raw: Mapping[str, Any], key: str, prefix: str = "") -> int | None:
        value = raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.problem(f"{prefix}{key}", f"expected a positive integer, got {value!r}")
            return None
        return value

    def choice(self, raw: Mapping[str, Any], key: str, enum: type[_E], default: _E) -> _E:
        value = raw.get(key, str(default))
        try:
            return enum(value)
        except ValueError:
            allowed = ", ".join(member.value for member in enum)
            self.problem(key, f"{value!r} is not one of {allowed}")
            return default

    def choice_text(
        self, raw: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str
    ) -> str:
        value = raw.get(key, default)
        if value not in allowed:
            self.problem(key, f"{value!r} is not one of {', '.join(allowed)}")
            return default
        return str(value)
