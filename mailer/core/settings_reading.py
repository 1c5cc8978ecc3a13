"""From TOML tables and MAILER_* variables to typed sections: every value converted by its
field's type, every unknown key or wrong type a ConfigError naming the setting, and no
secret ever read from the TOML file."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names it."""


SECRET_KEYS = frozenset({"password", "keys", "secret", "dkim_private_key"})


def refuse_secrets(raw: Mapping[str, Any], prefix: str) -> None:
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if key in SECRET_KEYS:
            raise ConfigError(
                f"{name}: secrets are never read from the TOML file; use the environment "
                "(MAILER_SMTP_PASSWORD, MAILER_TOKEN_KEYS) or a *_file path"
            )
        if isinstance(value, Mapping):
            refuse_secrets(value, f"{name}.")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    refuse_secrets(item, f"{name}[{i}].")


def env_overrides(cls: type, section: str, env: Mapping[str, str]) -> dict[str, Any]:
    """MAILER_<SECTION>_<KEY> for every scalar field of a section."""
    found: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        name = f"MAILER_{section.upper()}_{f.name.upper()}"
        if name in env:
            found[f.name] = _EnvValue(name, env[name])
    return found


@dataclass(frozen=True)
class _EnvValue:
    """A string from the environment, converted by the field's type."""

    name: str
    text: str


def build(cls: type[Any], data: Mapping[str, Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown setting")
    kwargs = {key: _convert(hints[key], value, f"{where}.{key}") for key, value in data.items()}
    return cls(**kwargs)


def _convert(hint: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(value, _EnvValue):
        name = f"{name} (from {value.name})"
        value = _parse_env(hint, value.text, name)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: expected a list of strings, got {value!r}")
        return tuple(value)
    if origin is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a table")
        item_cls = typing.get_args(hint)[1]
        return {k: build(item_cls, v, f"{name}.{k}") for k, v in value.items()}
    raise ConfigError(f"{name}: unsupported setting type {hint!r}")


def _parse_env(hint: Any, text: str, name: str) -> Any:
    try:
        if hint is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
        if typing.get_origin(hint) is tuple:
            return [part.strip() for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{name}: cannot read {text!r} as {hint.__name__}") from None
    return text


def read_secret_file(path: str, name: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None
