-- The browser console's own tables: operators, their sessions, failed logins.
-- Everything else a page shows comes from the role stores (campaigns, contacts, report),
-- the same queries the CLI runs.

-- name: operator_add
-- A new operator, with a password hash (prompt) or a one-time link's token hash.
INSERT INTO operators (email, role, locale, password_hash, setup_token_hash, setup_expires_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (email) DO NOTHING
RETURNING id

-- name: operator_by_email
SELECT id, email, role, locale, password_hash, disabled_at IS NOT NULL AS disabled
FROM operators WHERE email = $1

-- name: operator_by_setup_token
-- The link works once and until it expires.
SELECT id, email, role, locale, password_hash, disabled_at IS NOT NULL AS disabled
FROM operators WHERE setup_token_hash = $1 AND setup_expires_at > now()

-- name: operator_set_password
-- Setting a password burns the link and ends every session (a new password is a new start).
WITH done AS (
    UPDATE operators SET password_hash = $2, setup_token_hash = NULL, setup_expires_at = NULL
    WHERE id = $1 RETURNING id
)
DELETE FROM console_sessions WHERE operator_id IN (SELECT id FROM done)

-- name: operator_set_locale
UPDATE operators SET locale = $2 WHERE id = $1

-- name: operators_list
SELECT o.id, o.email, o.role, o.locale, o.password_hash IS NOT NULL AS has_password,
       o.disabled_at IS NOT NULL AS disabled, o.created_at,
       (SELECT max(s.last_seen_at) FROM console_sessions s WHERE s.operator_id = o.id) AS last_seen_at
FROM operators o ORDER BY o.email

-- name: session_create
INSERT INTO console_sessions (token_hash, operator_id, csrf_token, ip, user_agent)
VALUES ($1, $2, $3, $4, $5)

-- name: session_touch
-- One statement per request: the session is found only while within both timeouts
-- ($2 idle seconds since last use, $3 seconds since login) and its operator is enabled,
-- and its last use moves to now. An expired row is simply never found again (and swept).
UPDATE console_sessions s SET last_seen_at = now()
FROM operators o
WHERE s.token_hash = $1 AND o.id = s.operator_id AND o.disabled_at IS NULL
  AND s.last_seen_at > now() - make_interval(secs => $2)
  AND s.created_at > now() - make_interval(secs => $3)
RETURNING o.id, o.email, o.role, o.locale, s.csrf_token, s.created_at

-- name: session_delete
DELETE FROM console_sessions WHERE token_hash = $1

-- name: sessions_delete_for_operator
-- "Log out everywhere".
DELETE FROM console_sessions WHERE operator_id = $1

-- name: sessions_sweep
-- Sessions past either timeout; run at login so the table holds only live ones.
DELETE FROM console_sessions
WHERE last_seen_at <= now() - make_interval(secs => $1)
   OR created_at <= now() - make_interval(secs => $2)

-- name: login_locked_until
-- The latest lock among the keys (the address and the client's IP).
SELECT max(locked_until) FROM console_login_failures
WHERE key = ANY($1::text[]) AND locked_until > now()

-- name: login_failure_record
-- One more failure for each key; past $2 failures the key is locked for $3 seconds doubled
-- per further failure, capped at $4 (exponential backoff). $5: the IP key's own limit.
-- The count decays: a key quiet for $6 seconds (no failure, and no lock running then)
-- starts again from one, so typos weeks apart never add up to a lockout, while an
-- attacker retrying as each lock ends keeps doubling it.
INSERT INTO console_login_failures AS f (key, failures, last_failure_at, locked_until)
SELECT k, 1, now(), CASE WHEN 1 >= (CASE WHEN k LIKE 'ip:%' THEN $5::int ELSE $2::int END)
                         THEN now() + make_interval(secs => $3::float8) END
FROM unnest($1::text[]) AS k
ON CONFLICT (key) DO UPDATE SET
    -- The count so far, decayed, is written out in each place (one statement keeps the
    -- increment atomic under concurrent failures).
    failures = (CASE WHEN greatest(f.last_failure_at, f.locked_until) > now() - make_interval(secs => $6::float8)
          THEN f.failures ELSE 0 END) + 1,
    last_failure_at = now(),
    locked_until = CASE
        WHEN (CASE WHEN greatest(f.last_failure_at, f.locked_until) > now() - make_interval(secs => $6::float8)
          THEN f.failures ELSE 0 END) + 1 >= (CASE WHEN f.key LIKE 'ip:%' THEN $5::int ELSE $2::int END)
        THEN now() + make_interval(secs => least(
            $4::float8,
            -- The exponent bounded: 2^1024 overflows a float8 (a key failing for ever).
            $3::float8 * power(2, least(30, (CASE WHEN greatest(f.last_failure_at, f.locked_until) > now() - make_interval(secs => $6::float8)
          THEN f.failures ELSE 0 END) + 1 - (CASE WHEN f.key LIKE 'ip:%' THEN $5::int ELSE $2::int END)))))
    END
RETURNING locked_until

-- name: login_failures_clear
DELETE FROM console_login_failures WHERE key = $1

-- ---------------------------------------------------------------- uploads
-- Files uploaded for import (console_uploads); the import itself is the CLI's.

-- name: upload_begin
-- A new upload (the store runs uploads_rejects_expire first, in its transaction).
INSERT INTO console_uploads (kind, file_name, operator_email, options, lease_until)
VALUES ($1, $2, $3, $4, now() + $5 * interval '1 second') RETURNING id

-- name: upload_finish
-- Once, from 'running': a finished upload is never rewritten. Also from 'interrupted':
-- a process that was alive after all (its lease renewal late) says how the import
-- really ended. $8: the sha256 of each address in the rejects, for an erasure to find.
-- A person erased while the upload ran (erase_rejects passes a running upload by: it has
-- no rejects yet) is not kept in them: the file is dropped as the erasure would have.
UPDATE console_uploads u
SET state = $2, import_id = $3, summary = $4, error = $5, rows_rejected = $6,
    rejects_gz = CASE WHEN e.erased THEN NULL ELSE $7::bytea END,
    rejects_hashes = CASE WHEN e.erased THEN NULL ELSE $8::bytea[] END,
    rejects_erased_at = CASE WHEN e.erased THEN now() END,
    finished_at = now()
FROM (SELECT EXISTS (
          SELECT 1 FROM suppressions s
          WHERE s.reason = 'erasure' AND s.email_hash = ANY($8::bytea[])
            AND s.created_at >= (SELECT started_at FROM console_uploads WHERE id = $1)
      ) AS erased) e
WHERE u.id = $1 AND u.state IN ('running', 'interrupted')

-- name: upload_leases_renew
-- The console's upkeep renews the lease of each upload this process is importing.
UPDATE console_uploads SET lease_until = now() + $2 * interval '1 second'
WHERE id = ANY($1::bigint[]) AND state = 'running'

-- name: uploads_interrupted
-- Uploads whose process stopped renewing their lease (killed, crashed): their import's
-- transaction died with it, so nothing was imported; said so instead of `running`.
UPDATE console_uploads
SET state = 'interrupted', finished_at = now(),
    error = 'the console process importing it stopped: nothing was imported'
WHERE state = 'running' AND lease_until < now()
RETURNING id

-- name: uploads_rejects_expire
-- The rejects files' retention, written here only: files finished over 30 days ago are
-- dropped, by the console's upkeep (hourly) and at each new upload (upload_begin): they
-- hold the addresses of rows never imported, kept to be fixed, not for ever (GDPR art.
-- 5(1)(e)).
UPDATE console_uploads SET rejects_gz = NULL, rejects_hashes = NULL
WHERE rejects_gz IS NOT NULL AND finished_at < now() - interval '30 days'

-- name: upload_get
SELECT id, kind, file_name, operator_email, options, state, import_id, summary, error,
       rows_rejected, rejects_gz IS NOT NULL AS has_rejects, started_at, finished_at,
       rejects_erased_at
FROM console_uploads WHERE id = $1

-- name: upload_rejects
SELECT rejects_gz FROM console_uploads WHERE id = $1

-- name: uploads_page
-- Newest first, a keyset page below id $1 (NULL: the first page); the list never reads
-- the rejects themselves.
SELECT id, kind, file_name, operator_email, options, state, import_id, summary, error,
       rows_rejected, rejects_gz IS NOT NULL AS has_rejects, started_at, finished_at,
       rejects_erased_at
FROM console_uploads WHERE $1::bigint IS NULL OR id < $1
ORDER BY id DESC LIMIT $2

-- name: import_records_page
-- Every import record (CLI, API, console), newest first below id $1: the file, its rows,
-- who ran it (the database user; the operator for a console upload).
SELECT i.id, i.kind, i.file_name, i.rows_read, i.rows_valid, i.rows_rejected, i.imported_by,
       i.imported_at, u.id AS upload_id, u.operator_email
FROM imports i LEFT JOIN console_uploads u ON u.import_id = i.id
WHERE $1::bigint IS NULL OR i.id < $1
ORDER BY i.id DESC LIMIT $2

-- ---------------------------------------------------------------- listings
-- Lists the roles' own queries do not page: newest first, keyset on id.

-- name: suppressions_page
-- Suppressions below id $1 (NULL: the first page), of reason $2 (NULL: any). Keyed by
-- the address hash, shown as such: contacts.email_hash has no index (migration 0018:
-- the import paid a random-key insert per contact for it), so naming the addresses
-- would read every contact per page; the page's check form answers for one address.
SELECT s.id, s.scope, s.channel, t.slug AS topic, s.reason, s.source, s.created_at,
       s.email_hash
FROM suppressions s
LEFT JOIN topics t ON t.id = s.topic_id
WHERE ($1::bigint IS NULL OR s.id < $1) AND ($2::text IS NULL OR s.reason = $2)
ORDER BY s.id DESC LIMIT $3
