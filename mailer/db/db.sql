-- Migration bookkeeping (mailer/db/migrations.py).

-- name: migrations_bootstrap
-- The bookkeeping table cannot be created by a migration (it records them).
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   bytea NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: migrations_lock
-- Session-level advisory lock: a second migrator waits here, then finds
-- everything applied. Released explicitly (or when the connection closes).
SELECT pg_advisory_lock($1)

-- name: migrations_unlock
SELECT pg_advisory_unlock($1)

-- name: migrations_applied
SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version

-- name: migrations_record
INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)

-- name: migrations_table_exists
-- Read-only: asked when a command met a missing table, so it must not create the table.
SELECT to_regclass('schema_migrations') IS NOT NULL AS present
