"""The settings' types: one frozen dataclass per TOML table, each field with its type and
embedded default, and Settings, which holds them all (mailer.core.settings.load builds it;
config/mailer.example.toml documents every field)."""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from mailer.core.dkim import DkimKey
from mailer.core.settings_reading import ConfigError, read_secret_file
from mailer.core.tokens import Keyring


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
        try:  # checked here, so a malformed or short key stops the command with its name
            Keyring.from_spec(self.token_keys)
        except ValueError as exc:  # the message never echoes a secret (tokens.py)
            raise ConfigError(f"tokens.keys: {exc}") from None
        return self.token_keys

    def relay_password(self, relay: RelaySettings) -> str | None:
        """A relay's SMTP password: MAILER_SMTP_PASSWORD[_<NAME>] or the relay's password_file."""
        env_name = f"MAILER_SMTP_PASSWORD_{relay.name.upper().replace('-', '_')}"
        for name in (env_name, "MAILER_SMTP_PASSWORD"):
            if os.environ.get(name):
                return os.environ[name]
        if relay.password_file:
            return read_secret_file(relay.password_file, f"relays.{relay.name}.password_file")
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
