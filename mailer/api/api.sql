-- The operator API's own tables: keys (hash and prefix only) and idempotency
-- records. Run by mailer/api/store.py.

-- name: key_create
INSERT INTO api_keys (name, prefix, secret_hash, scopes, expires_at)
VALUES ($1, $2, $3, $4::text[], $5)
RETURNING id, name, prefix, secret_hash, scopes, created_at, expires_at, revoked_at, last_used_at

-- name: key_list
-- Every key, newest first: revoked and expired ones too (the log names them).
SELECT id, name, prefix, secret_hash, scopes, created_at, expires_at, revoked_at, last_used_at
FROM api_keys ORDER BY id DESC

-- name: key_by_prefix
-- The authentication lookup: the prefix is unique, the hash is compared in Python
-- in constant time.
SELECT id, name, prefix, secret_hash, scopes, created_at, expires_at, revoked_at, last_used_at
FROM api_keys WHERE prefix = $1

-- name: key_revoke
-- Revocation is final; a second revoke keeps the first time.
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
WHERE prefix = $1 OR name = $1
RETURNING prefix

-- name: key_expire
-- Expire at $2 (now, or a later time for a rotation's overlap).
UPDATE api_keys SET expires_at = $2
WHERE (prefix = $1 OR name = $1) AND revoked_at IS NULL
RETURNING prefix

-- name: key_touch
-- last_used_at at most once a minute per key: a busy key does not write per request.
UPDATE api_keys SET last_used_at = now()
WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')

-- name: idempotency_claim
-- Claims (key, Idempotency-Key) in the write's transaction. A concurrent request
-- with the same key waits here on the unique index until the first commits (then
-- finds the row and replays its answer) or rolls back (then claims it itself).
INSERT INTO api_idempotency (key_id, idem_key, request_hash) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING
RETURNING 1

-- name: idempotency_get
SELECT request_hash, status, body FROM api_idempotency WHERE key_id = $1 AND idem_key = $2

-- name: idempotency_save
UPDATE api_idempotency SET status = $3, body = $4 WHERE key_id = $1 AND idem_key = $2

-- name: idempotency_purge
-- Keys are kept 24 hours (a retry comes within minutes; Stripe keeps them a day).
DELETE FROM api_idempotency WHERE created_at < now() - interval '24 hours'
