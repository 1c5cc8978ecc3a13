-- The browser console's accounts (issue "Operator console in the browser").
-- Operators log in with a password hashed by argon2id (never stored in clear);
-- sessions live here, server-side, so "log out everywhere" and expiry are one
-- DELETE and a browser holds only a random token whose SHA-256 is the key.

CREATE TABLE operators (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email             text NOT NULL UNIQUE,
    role              text NOT NULL CHECK (role IN ('viewer', 'sender', 'admin')),
    locale            text NOT NULL DEFAULT 'en' CHECK (locale IN ('en', 'fr')),
    -- NULL until the operator sets a password through the one-time link.
    password_hash     text,
    -- SHA-256 of the one-time set-password link's token, and when it stops working.
    setup_token_hash  bytea UNIQUE,
    setup_expires_at  timestamptz,
    disabled_at       timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE console_sessions (
    token_hash    bytea PRIMARY KEY,
    operator_id   bigint NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    -- Compared with the form's field on every POST (synchroniser token, OWASP CSRF sheet).
    csrf_token    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    ip            text,
    user_agent    text
);
CREATE INDEX console_sessions_operator_idx ON console_sessions (operator_id);

-- Failed logins per key ('email:…' or 'ip:…'): the lockout doubles with each failure
-- past the limit. A successful login clears the email's row.
CREATE TABLE console_login_failures (
    key              text PRIMARY KEY,
    failures         integer NOT NULL,
    last_failure_at  timestamptz NOT NULL,
    locked_until     timestamptz
);

-- The dashboard's "last 24 hours": withdrawals, bounces and complaints by time, without
-- reading whole tables (withdrawals are a small share of the ledger: a partial index).
CREATE INDEX consents_withdrawn_recent_idx ON consents (recorded_at) WHERE action = 'withdraw';
CREATE INDEX bounces_recent_idx ON bounces (occurred_at);
CREATE INDEX complaints_recent_idx ON complaints (occurred_at);
