"""Consent-first async bulk mailer: send engine, domain rules and operator CLI."""

__version__ = "0.1.0"
