"""Settings: embedded defaults, then a TOML file, then MAILER_* environment variables.

Every setting is declared once, with its type and default, in its section
(settings_sections.py); the example file `config/mailer.example.toml` documents
the same list. Values are read and converted in settings_reading.py, the whole
checked in settings_checks.py. Unknown keys are
errors (a typo must not silently fall back to a default), and every error
names the setting. Secrets never come from the TOML file: SMTP passwords and
token keys are read from the environment or from a file path. DKIM private keys
are read from their files, and validated, here: a configured key signs or the
command does not start.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mailer.core.settings_checks import dkim_keys as dkim_keys_of
from mailer.core.settings_checks import validate
from mailer.core.settings_reading import (
    ConfigError,
    build,
    env_overrides,
    read_secret_file,
    refuse_secrets,
)
from mailer.core.settings_sections import (
    ApiSettings,
    ConsoleSettings,
    DatabaseSettings,
    DomainThrottle,
    EngineSettings,
    FormsSettings,
    GuardSettings,
    ImportSettings,
    InboundSettings,
    RelaySettings,
    SenderSettings,
    Settings,
    ThrottleSettings,
    TokenSettings,
    TrackerSettings,
    TransactionalSettings,
    WebhookSettings,
)

# The sections are imported from here: one name for all of a configuration's types.
__all__ = [
    "ApiSettings",
    "ConfigError",
    "ConsoleSettings",
    "DatabaseSettings",
    "DomainThrottle",
    "EngineSettings",
    "FormsSettings",
    "GuardSettings",
    "ImportSettings",
    "InboundSettings",
    "RelaySettings",
    "SenderSettings",
    "Settings",
    "ThrottleSettings",
    "TokenSettings",
    "TrackerSettings",
    "TransactionalSettings",
    "WebhookSettings",
    "load",
]


# TOML section name -> Settings attribute (where they differ).
_SECTION_ATTR = {"import": "imports"}


def load(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    dkim_keys: bool = True,
) -> Settings:
    """Build Settings from defaults, the TOML file (if any) and the environment.

    dkim_keys=False: for the tracker, which never signs; an internet-facing process
    does not hold (or need read access to) the DKIM private keys.
    """
    env = os.environ if environ is None else environ
    if path is None and env.get("MAILER_CONFIG"):
        path = Path(env["MAILER_CONFIG"])
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
    refuse_secrets(raw, "")
    values: dict[str, Any] = {}
    for section, data in raw.items():
        attr = _SECTION_ATTR.get(section, section)
        if attr == "relays":
            if not isinstance(data, list):
                raise ConfigError("relays: expected an array of tables ([[relays]])")
            values["relays"] = tuple(
                build(RelaySettings, item, f"relays[{i}]") for i, item in enumerate(data)
            )
        elif attr in _sections():
            values[attr] = data
        else:
            raise ConfigError(f"{section}: unknown section")
    for attr, cls in _sections().items():
        section_env = env_overrides(cls, _toml_name(attr), env)
        merged = {**values.get(attr, {}), **section_env}
        if not isinstance(merged, dict):
            raise ConfigError(f"{_toml_name(attr)}: expected a table")
        values[attr] = build(cls, merged, _toml_name(attr))
    if env.get("DATABASE_URL"):
        values["database"] = dataclasses.replace(values["database"], url=env["DATABASE_URL"])
    values["token_keys"] = env.get("MAILER_TOKEN_KEYS") or (
        read_secret_file(values["tokens"].keys_file, "tokens.keys_file")
        if values["tokens"].keys_file
        else None
    )
    values["dkim_keys"] = dkim_keys_of(values["sender"], env) if dkim_keys else ()
    settings = Settings(**values)
    validate(settings)
    return settings


def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(Settings)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(Settings)
        if isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name])
    }


def _toml_name(attr: str) -> str:
    return {v: k for k, v in _SECTION_ATTR.items()}.get(attr, attr)
