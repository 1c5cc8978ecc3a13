"""What a loaded configuration must satisfy before any command runs: ranges, URLs, host
names, paired settings, and the DKIM keys read and checked (a configured key signs, or
nothing starts). Each failure is a ConfigError naming the setting."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from mailer.core.addresses import is_hostname
from mailer.core.dkim import Algorithm, DkimKey, DkimKeyError, load_key, valid_selector
from mailer.core.settings_reading import ConfigError
from mailer.core.settings_sections import SenderSettings, Settings

_DKIM_SETTINGS: tuple[tuple[str, str, Algorithm], ...] = (
    ("dkim_selector", "dkim_key_file", "rsa-sha256"),
    ("dkim_ed25519_selector", "dkim_ed25519_key_file", "ed25519-sha256"),
)


def dkim_keys(sender: SenderSettings, env: Mapping[str, str]) -> tuple[DkimKey, ...]:
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


def validate(s: Settings) -> None:
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
