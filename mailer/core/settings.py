"""Settings: embedded defaults, then a TOML file, then MAILER_* environment variables.

Every setting is declared once below with its type and default; the example
file `config/mailer.example.toml` documents the same list. Unknown keys are
errors (a typo must not silently fall back to a default), and every error
names the setting. Secrets never come from the TOML file: SMTP passwords and
token keys are read from the environment or from a file path. DKIM private keys
are read from their files, and validated, here: a configured key signs or the
command does not start.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import re
import socket
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailer.core.addresses import is_hostname
from mailer.core.dkim import Algorithm, DkimKey, DkimKeyError, load_key, valid_selector

SECRET_KEYS = frozenset({"password", "keys", "secret", "dkim_private_key"})


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names it."""


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "postgresql://postgres@127.0.0.1:5432/mailer"
    pool_min: int = 1
    pool_max: int = 10
    # Connections that compute a whole audience at once, each over a range of
    # contact ids: about one per core of the database server.
    audience_parts: int = 2


@dataclass(frozen=True)
class RelaySettings:
    name: str = "default"
    host: str = "127.0.0.1"
    port: int = 2525
    tls: str = "none"
    username: str = ""
    password_file: str = ""
    weight: int = 1
    connections: int = 8
    timeout_s: float = 30.0
    # The name given in EHLO; empty: sender.domain, else this machine's FQDN (Settings.helo_name).
    helo_name: str = ""


@dataclass(frozen=True)
class SenderSettings:
    # Domain for Message-ID, the VERP return path (bounces+TOKEN@domain) and the mailto
    # unsubscribe; empty: each campaign's From domain, which DMARC alignment wants.
    domain: str = ""
    bounce_local_part: str = "bounces"
    unsubscribe_mailbox: str = "unsubscribe"
    # DKIM (RFC 6376) as the From domain of each campaign: an RSA key (2048 bits), and
    # optionally an Ed25519 one beside it (RFC 8463). All empty: the relay signs.
    dkim_selector: str = ""
    dkim_key_file: str = ""
    dkim_ed25519_selector: str = ""
    dkim_ed25519_key_file: str = ""

    def domain_for(self, from_address: str) -> str:
        """The domain a campaign's return path and Message-IDs use: `domain`, else its From's."""
        return self.domain or from_address.rpartition("@")[2].lower()


@dataclass(frozen=True)
class TrackerSettings:
    base_url: str = "http://127.0.0.1:8080"
    host: str = "127.0.0.1"
    port: int = 8080
    buffer_max: int = 50_000
    flush_interval_ms: int = 250
    # The longest a request waits for one database call, getting a connection included; past
    # it the page answers 503 (an opt-out with Retry-After, so mail providers retry it).
    db_timeout_ms: int = 2000
    # Postgres-side statement_timeout and lock_timeout of the tracker's connections: shorter
    # than db_timeout_ms, so the server itself cancels a stuck statement and rolls back.
    db_statement_timeout_ms: int = 1000


@dataclass(frozen=True)
class ConsoleSettings:
    """`mailer console serve`: the operators' browser console (mailer/console)."""

    # The URL operators open (one-time set-password links are built on it); https:// behind
    # the reverse proxy in production, which also turns on Secure cookies and HSTS.
    base_url: str = "http://127.0.0.1:8025"
    host: str = "127.0.0.1"  # loopback by default: a proxy in front terminates TLS
    port: int = 8025
    # Addresses (or CIDR networks) of the reverse proxies whose X-Forwarded-For and
    # X-Forwarded-Proto are believed; from anyone else those headers are ignored.
    trusted_proxies: tuple[str, ...] = ()
    idle_minutes: int = 30  # a session unused this long is over (OWASP session sheet)
    absolute_hours: int = 12  # and any session ends this long after login
    login_max_failures: int = 5  # failures for one address before the lockout starts
    lockout_seconds: int = 30  # first lockout; doubles with each further failure
    lockout_max_seconds: int = 3600
    # A key (address or client IP) with no failure for this long starts again from zero: the
    # count decays, so a few typos spread over weeks never add up to a lockout.
    login_failure_window_seconds: int = 900
    setup_link_hours: int = 24  # how long a set-password link works
    templates_dir: str = "templates"  # campaign templates the console creates campaigns from
    # Reads too slow for a page (a live audience with samples, the unsubscribe SLA check) run
    # in the background: a page waits this long for a fresh result, then shows the last one
    # with its age (bench/README.md "Console").
    page_wait_ms: int = 200
    audience_max_age_seconds: int = 60  # a live audience is recomputed when older than this
    sla_max_age_seconds: int = 300  # the dashboard's unsubscribe-SLA check, likewise


@dataclass(frozen=True)
class TokenSettings:
    keys_file: str = ""


@dataclass(frozen=True)
class EngineSettings:
    batch_size: int = 500
    lease_seconds: int = 300
    retry_deadline_hours: float = 24.0
    metrics_port: int = 9101
    # Processes composing messages for this worker (0: on its own event loop, which
    # then also answers SMTP replies later; measured ~20 % fewer messages a second).
    render_processes: int = 1
    # Messages per SMTP connection whose start mark is committed while the message
    # before them is on the wire (mailer/send/recorder.py): after kill -9, at most
    # starts_ahead rows per connection are uncertain without having reached the
    # relay. 0: each message waits for its own commit; more: fewer, larger commits
    # and fewer waits when the database's WAL flush is slow.
    starts_ahead: int = 2
    # Limits on composing one message (mailer.limits): CPU time (a render takes ~0.3 ms,
    # ~7 ms with pure-Python DKIM), size (and never above the relay's EHLO SIZE), and
    # the address space of each render process (one idles at ~40 MB).
    render_timeout_ms: int = 500
    max_message_bytes: int = 10_000_000
    render_memory_mb: int = 512


@dataclass(frozen=True)
class DomainThrottle:
    rate: float = 10.0
    concurrency: int = 4


@dataclass(frozen=True)
class ThrottleSettings:
    global_rate: float = 200.0
    default_domain_rate: float = 20.0
    default_domain_concurrency: int = 8
    warmup_daily_cap: int = 0
    warmup_growth: float = 1.5
    # Adaptive slow-down of a domain (mailer/aimd.py): a 421, or "too many
    # connections" / "try again later" before any recipient is named, cuts the
    # domain's rate for every worker by slowdown_factor, never below
    # slowdown_floor of its configured rate; it recovers by recovery_step of
    # the configured rate every recovery_every_s. A 4xx to one recipient is
    # retried for that recipient only, and cuts only when more than
    # deferral_share of at least deferral_min_sample replies within
    # deferral_window_s are 4xx.
    slowdown_factor: float = 0.5
    slowdown_floor: float = 0.125
    slowdown_hold_s: float = 5.0
    recovery_step: float = 0.1
    recovery_every_s: float = 10.0
    deferral_window_s: float = 60.0
    deferral_share: float = 0.3
    deferral_min_sample: int = 50
    domains: Mapping[str, DomainThrottle] = field(default_factory=dict)


@dataclass(frozen=True)
class InboundSettings:
    """`mailer inbound serve` / `ingest`: the return path's SMTP server and its processing."""

    host: str = "127.0.0.1"
    port: int = 2526
    # Banner and EHLO name; empty: sender.domain, else this machine's FQDN.
    hostname: str = ""
    # Local parts (any domain) or whole addresses accepted besides the signed tokens:
    # RFC 5321 s.4.5.1 wants postmaster; abuse (RFC 2142) and the FBL address get reports.
    mailboxes: tuple[str, ...] = ("postmaster", "abuse", "fbl")
    max_message_bytes: int = 10_485_760
    max_recipients: int = 20
    max_connections: int = 200
    timeout_s: float = 60.0
    # STARTTLS when both are set (PEM files); plain SMTP otherwise.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    metrics_port: int = 9102
    batch_size: int = 200  # stored messages classified and applied per transaction
    # Processes parsing and classifying a batch (0: on the server's own event loop, which
    # then answers SMTP later; see mailer/inbound/classify_pool.py).
    classify_processes: int = 1
    # Last-resort attribution by recipient address: only a delivery sent this recently.
    recipient_match_days: int = 30
    # A soft bounce (4.x.x) is an event; this many, on distinct deliveries within
    # soft_bounce_days and after the address's last delivery that did not bounce,
    # suppress the address.
    soft_bounce_limit: int = 3
    soft_bounce_days: int = 30
    # ESP webhooks (POST /webhooks/ses) on this port; 0: none.
    webhook_port: int = 0
    webhook_host: str = "127.0.0.1"
    # SNS topics whose notifications are accepted (empty: any topic whose message verifies).
    ses_topic_arns: tuple[str, ...] = ()
    # The SNS signing certificate is fetched only from an https URL on a host matching this
    # (RFC-free, AWS's documented advice); tests point it at a local stub.
    sns_cert_host: str = r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?"
    sns_ca_file: str = ""  # CA bundle to verify that host by; empty: the system's


@dataclass(frozen=True)
class GuardSettings:
    """The reputation guard: pause a running campaign whose rates cross these."""

    # Amazon SES reviews accounts past 5 % bounces; Gmail's bulk-sender rules keep
    # complaints under 0.1 % (0.3 % is the hard limit). Per campaign: [reputation].
    max_hard_bounce_rate: float = 0.05
    max_complaint_rate: float = 0.001
    min_sample: int = 500  # messages sent in the window before a rate is judged
    window_hours: float = 24.0
    interval_s: float = 10.0  # how often running campaigns are checked


@dataclass(frozen=True)
class FormsSettings:
    """Sign-up forms (mailer/forms): who they name, what evidence they keep, abuse limits."""

    # The business identity every form page and confirmation mail shows (CASL s.6(2)(a)
    # and its regulations: name, postal address, and one contact method).
    business_name: str = ""
    postal_address: str = ""
    contact: str = ""  # a phone number, an email address or a web address
    # The transactional template of the confirmation mail (templates/transactional/).
    confirmation_template: str = "signup_confirmation"
    # "full": the client's whole IP address is kept with the consent evidence; "prefix": only
    # its /24 or /48. Full by default: the sender bears the burden of proving consent (CASL
    # s.13; GDPR art. 7(1)), and the address the request came from is part of that proof.
    ip_policy: str = "full"
    # A pending request that is not confirmed is deleted, with its personal data, after this.
    pending_days: int = 7
    # At most one confirmation mail per address within this many hours (subscription bombing).
    mail_interval_hours: float = 24.0
    # Sign-up requests accepted from one IP prefix (/24, /48) per window, per tracker.
    ip_prefix_limit: int = 20
    ip_prefix_window_s: int = 3600
    # How many prefixes each tracker remembers (bounded memory under a spread-out flood).
    ip_prefix_tracked: int = 100_000
    # How long the signed form token of a served form page stays good.
    form_token_max_age_s: int = 7200
    # How often the tracker deletes expired pending requests.
    expiry_interval_s: int = 300


@dataclass(frozen=True)
class ImportSettings:
    default_locale: str = "en"
    locales: tuple[str, ...] = ("en", "fr")


@dataclass(frozen=True)
class ApiSettings:
    """The operator HTTP API (`mailer api serve`)."""

    # Loopback by default: the API is for the business's own systems, behind a proxy.
    host: str = "127.0.0.1"
    port: int = 8081
    rate_per_key: float = 50.0  # requests per second per key (token bucket), then 429
    rate_burst: int = 100
    max_batch: int = 1000  # contacts per upsert request
    max_body_mb: int = 8
    dispatch_webhooks: bool = True  # run the webhook dispatcher inside `api serve`
    # The folder of the templates a campaign file posted to POST /api/v1/campaigns names.
    templates_dir: str = "templates"


@dataclass(frozen=True)
class WebhookSettings:
    """Outgoing webhooks: timeouts, retries (Standard Webhooks: retry for days)."""

    timeout_s: float = 10.0
    retry_base_s: float = 5.0  # first retry after ~this, doubling each time, with jitter
    retry_max_s: float = 3600.0  # longest wait between two attempts
    retry_hours: float = 72.0  # then the event fails and its endpoint is disabled
    batch_size: int = 100  # deliveries claimed at once (one per contact)
    poll_s: float = 1.0  # longest sleep without a NOTIFY


@dataclass(frozen=True)
class TransactionalSettings:
    """The transactional lane (mailer/send/lane.py) and its templates."""

    templates_dir: str = "templates/transactional"
    # SMTP connections per relay kept for transactional messages: taken out of the relay's
    # `connections` while that leaves campaigns one, else added to them.
    connections: int = 1
    # How often an idle lane looks for due messages (enqueue also wakes it at once, NOTIFY).
    poll_ms: int = 500
    # Messages claimed at once by one lane.
    batch_size: int = 20


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    smtp: RelaySettings = field(default_factory=RelaySettings)
    relays: tuple[RelaySettings, ...] = ()
    sender: SenderSettings = field(default_factory=SenderSettings)
    tracker: TrackerSettings = field(default_factory=TrackerSettings)
    tokens: TokenSettings = field(default_factory=TokenSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    throttle: ThrottleSettings = field(default_factory=ThrottleSettings)
    imports: ImportSettings = field(default_factory=ImportSettings)
    inbound: InboundSettings = field(default_factory=InboundSettings)
    guard: GuardSettings = field(default_factory=GuardSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    transactional: TransactionalSettings = field(default_factory=TransactionalSettings)
    forms: FormsSettings = field(default_factory=FormsSettings)
    # Secrets, filled from the environment or files only.
    token_keys: str | None = field(default=None, repr=False)
    # Read from [sender] dkim_key_file / dkim_ed25519_key_file, RSA first.
    dkim_keys: tuple[DkimKey, ...] = field(default=(), repr=False)

    def all_relays(self) -> tuple[RelaySettings, ...]:
        """The configured relays: [[relays]] when given, else the single [smtp] relay."""
        return self.relays or (self.smtp,)

    def require_token_keys(self) -> str:
        """The token key spec, or a ConfigError naming where to set it."""
        if not self.token_keys:
            raise ConfigError(
                "tokens.keys: not set; export MAILER_TOKEN_KEYS='1:<base64 secret>' "
                "or point tokens.keys_file at a file holding it"
            )
        return self.token_keys

    def relay_password(self, relay: RelaySettings) -> str | None:
        """A relay's SMTP password: MAILER_SMTP_PASSWORD[_<NAME>] or the relay's password_file."""
        env_name = f"MAILER_SMTP_PASSWORD_{relay.name.upper().replace('-', '_')}"
        for name in (env_name, "MAILER_SMTP_PASSWORD"):
            if os.environ.get(name):
                return os.environ[name]
        if relay.password_file:
            return _read_secret_file(relay.password_file, f"relays.{relay.name}.password_file")
        return None

    def helo_name(self, relay: RelaySettings) -> str:
        """A relay's EHLO name: its helo_name, else sender.domain, else this machine's FQDN."""
        return relay.helo_name or self.sender.domain or _fqdn()

    def inbound_hostname(self) -> str:
        """The inbound server's banner name: inbound.hostname, else sender.domain, else FQDN."""
        return self.inbound.hostname or self.sender.domain or _fqdn()


@functools.cache
def _fqdn() -> str:
    return socket.getfqdn()  # may ask DNS: once per process


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
    _refuse_secrets(raw, "")
    values: dict[str, Any] = {}
    for section, data in raw.items():
        attr = _SECTION_ATTR.get(section, section)
        if attr == "relays":
            if not isinstance(data, list):
                raise ConfigError("relays: expected an array of tables ([[relays]])")
            values["relays"] = tuple(
                _build(RelaySettings, item, f"relays[{i}]") for i, item in enumerate(data)
            )
        elif attr in _sections():
            values[attr] = data
        else:
            raise ConfigError(f"{section}: unknown section")
    for attr, cls in _sections().items():
        section_env = _env_overrides(cls, _toml_name(attr), env)
        merged = {**values.get(attr, {}), **section_env}
        if not isinstance(merged, dict):
            raise ConfigError(f"{_toml_name(attr)}: expected a table")
        values[attr] = _build(cls, merged, _toml_name(attr))
    if env.get("DATABASE_URL"):
        values["database"] = dataclasses.replace(values["database"], url=env["DATABASE_URL"])
    values["token_keys"] = env.get("MAILER_TOKEN_KEYS") or (
        _read_secret_file(values["tokens"].keys_file, "tokens.keys_file")
        if values["tokens"].keys_file
        else None
    )
    values["dkim_keys"] = _dkim_keys(values["sender"], env) if dkim_keys else ()
    settings = Settings(**values)
    _validate(settings)
    return settings


_DKIM_SETTINGS: tuple[tuple[str, str, Algorithm], ...] = (
    ("dkim_selector", "dkim_key_file", "rsa-sha256"),
    ("dkim_ed25519_selector", "dkim_ed25519_key_file", "ed25519-sha256"),
)


def _dkim_keys(sender: SenderSettings, env: Mapping[str, str]) -> tuple[DkimKey, ...]:
    """Each configured DKIM key, read and checked now, so a bad one stops every command."""
    keys: list[DkimKey] = []
    for selector_attr, file_attr, algorithm in _DKIM_SETTINGS:
        selector, path = getattr(sender, selector_attr), getattr(sender, file_attr)
        selector_name = _setting_name("sender", selector_attr, env)
        file_name = _setting_name("sender", file_attr, env)
        if bool(selector) != bool(path):
            missing, given = (file_name, selector_name) if selector else (selector_name, file_name)
            raise ConfigError(
                f"{missing}: not set while {given} is; DKIM signing needs both "
                "(leave both empty to let the relay sign)"
            )
        if not selector:
            continue
        if not valid_selector(selector):
            raise ConfigError(
                f"{selector_name}: {selector!r} is not a DNS name (letters, digits, '-', '.')"
            )
        try:
            keys.append(load_key(path, selector, algorithm))
        except DkimKeyError as exc:
            raise ConfigError(f"{file_name}: {exc}") from None
    if len(keys) == 1 and keys[0].algorithm == "ed25519-sha256":
        # RFC 8463 s.1: Ed25519 goes beside RSA; many receivers verify only RSA.
        raise ConfigError(
            "sender.dkim_ed25519_selector: an Ed25519 signature goes beside an RSA one; "
            "set sender.dkim_selector and sender.dkim_key_file too"
        )
    if len(keys) == 2 and keys[0].selector == keys[1].selector:
        raise ConfigError(
            "sender.dkim_ed25519_selector: must differ from sender.dkim_selector "
            "(each selector publishes one key in DNS)"
        )
    return tuple(keys)


def _setting_name(section: str, key: str, env: Mapping[str, str]) -> str:
    """`section.key`, and the environment variable when that is where the value came from."""
    variable = f"MAILER_{section.upper()}_{key.upper()}"
    return f"{section}.{key} (from {variable})" if variable in env else f"{section}.{key}"


def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(Settings)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(Settings)
        if isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name])
    }


def _toml_name(attr: str) -> str:
    return {v: k for k, v in _SECTION_ATTR.items()}.get(attr, attr)


def _refuse_secrets(raw: Mapping[str, Any], prefix: str) -> None:
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if key in SECRET_KEYS:
            raise ConfigError(
                f"{name}: secrets are never read from the TOML file; use the environment "
                "(MAILER_SMTP_PASSWORD, MAILER_TOKEN_KEYS) or a *_file path"
            )
        if isinstance(value, Mapping):
            _refuse_secrets(value, f"{name}.")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    _refuse_secrets(item, f"{name}[{i}].")


def _env_overrides(cls: type, section: str, env: Mapping[str, str]) -> dict[str, Any]:
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


def _build(cls: type[Any], data: Mapping[str, Any], where: str) -> Any:
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
        return {k: _build(item_cls, v, f"{name}.{k}") for k, v in value.items()}
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


def _networks(values: tuple[str, ...]) -> bool:
    try:
        for value in values:
            ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def _read_secret_file(path: str, name: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None


def _validate(s: Settings) -> None:
    checks: list[tuple[bool, str]] = [
        (
            s.database.url.startswith(("postgres://", "postgresql://")),
            "database.url: expected a postgresql:// URL",
        ),
        (
            1 <= s.database.pool_min <= s.database.pool_max,
            "database.pool_min/pool_max: need 1 <= pool_min <= pool_max",
        ),
        (s.database.audience_parts >= 1, "database.audience_parts: must be at least 1"),
        (s.engine.batch_size > 0, "engine.batch_size: must be positive"),
        (
            s.transactional.connections >= 1,
            "transactional.connections: must be at least 1 (the lane's own connection per relay)",
        ),
        (
            10 <= s.transactional.poll_ms <= 60_000,
            "transactional.poll_ms: expected 10 to 60000 (milliseconds)",
        ),
        (
            1 <= s.transactional.batch_size <= 1000,
            "transactional.batch_size: expected 1 to 1000",
        ),
        (
            bool(s.transactional.templates_dir.strip()),
            "transactional.templates_dir: must name a folder",
        ),
        (s.engine.render_processes >= 0, "engine.render_processes: must be 0 or more"),
        (0 <= s.engine.starts_ahead <= 16, "engine.starts_ahead: must be 0 to 16"),
        (
            10 <= s.engine.render_timeout_ms <= 600_000,
            "engine.render_timeout_ms: expected 10 to 600000 (milliseconds of CPU per message)",
        ),
        (
            s.engine.max_message_bytes >= 65_536,
            "engine.max_message_bytes: must be at least 65536",
        ),
        (
            s.engine.render_memory_mb >= 128,
            "engine.render_memory_mb: must be at least 128 (a render process needs ~40)",
        ),
        (s.engine.lease_seconds >= 10, "engine.lease_seconds: must be at least 10"),
        (s.engine.retry_deadline_hours > 0, "engine.retry_deadline_hours: must be positive"),
        (s.throttle.global_rate > 0, "throttle.global_rate: must be positive"),
        (1 <= s.api.port <= 65535, "api.port: expected 1 to 65535"),
        (s.api.rate_per_key > 0, "api.rate_per_key: must be positive"),
        (s.api.rate_burst >= 1, "api.rate_burst: must be at least 1"),
        (1 <= s.api.max_batch <= 10_000, "api.max_batch: expected 1 to 10000"),
        (s.api.max_body_mb >= 1, "api.max_body_mb: must be at least 1"),
        (bool(s.api.templates_dir.strip()), "api.templates_dir: must name a folder"),
        (s.webhooks.timeout_s > 0, "webhooks.timeout_s: must be positive"),
        (s.webhooks.retry_base_s > 0, "webhooks.retry_base_s: must be positive"),
        (
            s.webhooks.retry_max_s >= s.webhooks.retry_base_s,
            "webhooks.retry_max_s: must be at least webhooks.retry_base_s",
        ),
        (s.webhooks.retry_hours > 0, "webhooks.retry_hours: must be positive"),
        (s.webhooks.batch_size >= 1, "webhooks.batch_size: must be at least 1"),
        (s.webhooks.poll_s > 0, "webhooks.poll_s: must be positive"),
        (s.throttle.default_domain_rate > 0, "throttle.default_domain_rate: must be positive"),
        (s.throttle.warmup_growth >= 1, "throttle.warmup_growth: must be at least 1"),
        (
            0 < s.throttle.slowdown_factor < 1,
            "throttle.slowdown_factor: must be between 0 and 1 (exclusive)",
        ),
        (0 < s.throttle.slowdown_floor <= 1, "throttle.slowdown_floor: must be in (0, 1]"),
        (s.throttle.slowdown_hold_s >= 0, "throttle.slowdown_hold_s: must be 0 or more"),
        (0 < s.throttle.recovery_step <= 1, "throttle.recovery_step: must be in (0, 1]"),
        (s.throttle.recovery_every_s > 0, "throttle.recovery_every_s: must be positive"),
        (s.throttle.deferral_window_s >= 1, "throttle.deferral_window_s: must be at least 1"),
        (0 < s.throttle.deferral_share <= 1, "throttle.deferral_share: must be in (0, 1]"),
        (s.throttle.deferral_min_sample >= 1, "throttle.deferral_min_sample: must be at least 1"),
        (
            s.tracker.base_url.startswith(("http://", "https://")),
            "tracker.base_url: expected an http(s):// URL",
        ),
        (
            not s.sender.domain or is_hostname(s.sender.domain),
            f"sender.domain: {s.sender.domain!r} is not a domain name",
        ),
        (s.tracker.buffer_max > 0, "tracker.buffer_max: must be positive"),
        (s.tracker.flush_interval_ms > 0, "tracker.flush_interval_ms: must be positive"),
        (s.tracker.db_timeout_ms > 0, "tracker.db_timeout_ms: must be positive"),
        (
            0 < s.tracker.db_statement_timeout_ms < s.tracker.db_timeout_ms,
            "tracker.db_statement_timeout_ms: must be positive and below tracker.db_timeout_ms",
        ),
        (
            s.imports.default_locale in s.imports.locales,
            "import.default_locale: must be one of import.locales",
        ),
    ]
    c = s.console
    checks += [
        (
            c.base_url.startswith(("http://", "https://")),
            "console.base_url: expected an http(s):// URL",
        ),
        (0 < c.port < 65536, "console.port: expected 1-65535"),
        (_networks(c.trusted_proxies), "console.trusted_proxies: expected addresses or CIDRs"),
        (c.idle_minutes >= 1, "console.idle_minutes: must be at least 1"),
        (
            c.absolute_hours * 60 >= c.idle_minutes,
            "console.absolute_hours: must be at least console.idle_minutes",
        ),
        (c.login_max_failures >= 1, "console.login_max_failures: must be at least 1"),
        (c.lockout_seconds >= 1, "console.lockout_seconds: must be at least 1"),
        (
            c.lockout_max_seconds >= c.lockout_seconds,
            "console.lockout_max_seconds: must be at least console.lockout_seconds",
        ),
        (
            c.login_failure_window_seconds >= c.lockout_seconds,
            "console.login_failure_window_seconds: must be at least console.lockout_seconds",
        ),
        (c.setup_link_hours >= 1, "console.setup_link_hours: must be at least 1"),
        (0 <= c.page_wait_ms <= 60000, "console.page_wait_ms: expected 0-60000"),
        (c.audience_max_age_seconds >= 1, "console.audience_max_age_seconds: must be at least 1"),
        (c.sla_max_age_seconds >= 1, "console.sla_max_age_seconds: must be at least 1"),
        (bool(c.templates_dir), "console.templates_dir: must name a folder"),
    ]
    i, g = s.inbound, s.guard
    checks += [
        (0 < i.port < 65536, "inbound.port: expected 1-65535"),
        (0 <= i.webhook_port < 65536, "inbound.webhook_port: expected 0 (off) or 1-65535"),
        (0 <= i.metrics_port < 65536, "inbound.metrics_port: expected 0 (off) or 1-65535"),
        (
            not i.hostname or is_hostname(i.hostname),
            f"inbound.hostname: {i.hostname!r} is not a host name",
        ),
        (all(m.strip() for m in i.mailboxes), "inbound.mailboxes: an entry is empty"),
        (i.max_message_bytes >= 65_536, "inbound.max_message_bytes: must be at least 65536"),
        (i.max_recipients >= 1, "inbound.max_recipients: must be at least 1"),
        (i.max_connections >= 1, "inbound.max_connections: must be at least 1"),
        (i.timeout_s > 0, "inbound.timeout_s: must be positive"),
        (
            bool(i.tls_cert_file) == bool(i.tls_key_file),
            "inbound.tls_cert_file/tls_key_file: set both for STARTTLS, or neither",
        ),
        (i.batch_size >= 1, "inbound.batch_size: must be at least 1"),
        (i.classify_processes >= 0, "inbound.classify_processes: must be 0 or more"),
        (i.recipient_match_days >= 1, "inbound.recipient_match_days: must be at least 1"),
        (i.soft_bounce_limit >= 1, "inbound.soft_bounce_limit: must be at least 1"),
        (i.soft_bounce_days >= 1, "inbound.soft_bounce_days: must be at least 1"),
        (_compiles(i.sns_cert_host), "inbound.sns_cert_host: not a regular expression"),
        (0 < g.max_hard_bounce_rate <= 1, "guard.max_hard_bounce_rate: must be in (0, 1]"),
        (0 < g.max_complaint_rate <= 1, "guard.max_complaint_rate: must be in (0, 1]"),
        (g.min_sample >= 1, "guard.min_sample: must be at least 1"),
        (g.window_hours > 0, "guard.window_hours: must be positive"),
        (g.interval_s > 0, "guard.interval_s: must be positive"),
    ]
    f = s.forms
    checks += [
        (f.ip_policy in ("full", "prefix"), "forms.ip_policy: expected full or prefix"),
        (1 <= f.pending_days <= 90, "forms.pending_days: expected 1 to 90"),
        (f.mail_interval_hours > 0, "forms.mail_interval_hours: must be positive"),
        (f.ip_prefix_limit >= 1, "forms.ip_prefix_limit: must be at least 1"),
        (f.ip_prefix_window_s >= 1, "forms.ip_prefix_window_s: must be at least 1"),
        (f.ip_prefix_tracked >= 100, "forms.ip_prefix_tracked: must be at least 100"),
        (f.form_token_max_age_s >= 60, "forms.form_token_max_age_s: must be at least 60"),
        (f.expiry_interval_s >= 1, "forms.expiry_interval_s: must be at least 1"),
        (
            bool(f.confirmation_template.strip()),
            "forms.confirmation_template: must name a transactional template",
        ),
    ]
    for relay in s.all_relays():
        where = f"relays.{relay.name}" if s.relays else "smtp"
        checks += [
            (
                relay.tls in ("none", "starttls", "tls"),
                f"{where}.tls: expected none, starttls or tls",
            ),
            (0 < relay.port < 65536, f"{where}.port: expected 1-65535"),
            (relay.connections > 0, f"{where}.connections: must be positive"),
            (relay.weight > 0, f"{where}.weight: must be positive"),
            (
                not relay.helo_name or is_hostname(relay.helo_name, address_literal=True),
                # RFC 5321 s.4.1.1.1: EHLO names the client by its FQDN or an address literal.
                f"{where}.helo_name: {relay.helo_name!r} is not a host name or [address]",
            ),
        ]
    for domain, limit in s.throttle.domains.items():
        checks += [
            (limit.rate > 0, f"throttle.domains.{domain}.rate: must be positive"),
            (limit.concurrency > 0, f"throttle.domains.{domain}.concurrency: must be positive"),
        ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
