-- Transactional messages: enqueue, the lane's claim and outcomes, the report.
-- Run by mailer/transactional/store.py. One row per message in
-- transactional_messages (the queue and the archive at once).

-- ---------------------------------------------------------------- enqueue

-- name: message_by_key
-- A retried request: the first message with this key, whatever became of it.
SELECT m.id, m.template, m.status, m.refusal, c.email
FROM transactional_messages m LEFT JOIN contacts c ON c.id = m.contact_id
WHERE m.idempotency_key = $1

-- name: address_facts
-- What the refusal rules read about an address ($1 normalised, $2 its hash):
-- the suppressions on the hash (they outlive erasure), the contact if any and
-- its email switch in the preference centre.
SELECT c.id AS contact_id, c.erased_at IS NOT NULL AS erased,
       (SELECT ch.enabled FROM contact_channels ch
        WHERE ch.contact_id = c.id AND ch.channel = 'email') AS email_enabled,
       coalesce((SELECT jsonb_agg(jsonb_build_object('scope', s.scope, 'channel', s.channel,
                                                     'topic_id', s.topic_id, 'reason', s.reason))
                 FROM suppressions s WHERE s.email_hash = $2), '[]') AS suppressions
FROM (SELECT 1) one LEFT JOIN contacts c ON c.email = $1

-- name: topic_for_rules
-- A commercial template's topic, as the consent rules take it.
SELECT id, default_subscribed FROM topics WHERE slug = $1

-- name: contact_create_lock
-- Contact imports assume every contact created while they hold their lock is
-- theirs (mailer/contacts/contacts.sql, import_lock: an advisory lock on the
-- same key). A walk-in recipient's contact is created under the shared form of
-- that lock: walk-ins never wait for each other, only for a running import.
SELECT pg_advisory_xact_lock_shared($1)

-- name: contact_find
SELECT id FROM contacts WHERE email = $1

-- name: contact_create
-- A walk-in customer: a contact row, and NO consent (CASL s.6(6) messages
-- need none, and receiving one is not a consent to anything else).
INSERT INTO contacts (email, email_hash, locale) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING
RETURNING id

-- name: template_version_upsert
-- Versions are immutable, shared with campaigns' (same table, same rule): the
-- same files give the same row.
WITH inserted AS (
    INSERT INTO template_versions (name, sha256, files) VALUES ($1, $2, $3)
    ON CONFLICT (name, sha256) DO NOTHING
    RETURNING id
)
SELECT id FROM inserted
UNION ALL
SELECT id FROM template_versions WHERE name = $1 AND sha256 = $2
LIMIT 1

-- name: message_insert
-- The durable "accepted": committed before the caller hears it (one
-- statement, so one round trip and its own commit for a known contact). A
-- second request with the same key waits here for the first to commit, then
-- inserts nothing (and the caller reads the first one's id). A queued
-- message NOTIFYs the lanes, delivered at commit, never before (the CTE is
-- read below so that it runs). $18: this message created its (walk-in)
-- contact, which a sign-up's expiry may then delete with it (forms.sql).
WITH inserted AS (
    INSERT INTO transactional_messages
        (template, template_version_id, definition, basis, contact_id, domain, locale, data,
         idempotency_key, status, refusal, note, consent_id, consent_kind, consent_source,
         consent_obtained_at, consent_date_only, contact_created)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
            $18)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, status
), notified AS (
    SELECT pg_notify('mailer_transactional', id::text) FROM inserted WHERE status = 'queued'
)
SELECT id, (SELECT count(*) FROM notified) AS notified FROM inserted

-- ---------------------------------------------------------------- the lane

-- name: claim
-- Due messages, oldest first, each claimed by one worker (SKIP LOCKED) under
-- a lease: `claimed`, not started (a worker that dies holding them hands them
-- back through the sweep). With everything composing and re-checking them
-- needs: the contact, the template version's files, the suppressions on the
-- address now (a hard bounce since enqueue refuses it yet).
WITH due AS (
    SELECT id FROM transactional_messages
    WHERE status IN ('queued', 'deferred') AND next_attempt_at <= now()
    ORDER BY next_attempt_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE transactional_messages m
    SET status = 'claimed', lease_until = now() + make_interval(secs => $2), worker = $3,
        updated_at = now()
    FROM due WHERE m.id = due.id
    RETURNING m.*
)
SELECT m.id, m.template, m.basis, m.definition, m.data, m.locale AS message_locale,
       m.enqueued_at, m.attempts, m.first_attempt_at, m.consent_kind, m.consent_source,
       m.consent_obtained_at, m.consent_date_only, m.domain,
       c.email, c.name, c.locale, c.tracking, c.erased_at IS NOT NULL AS erased,
       tv.name AS version_name, tv.files,
       (SELECT ch.enabled FROM contact_channels ch
        WHERE ch.contact_id = c.id AND ch.channel = 'email') AS email_enabled,
       coalesce((SELECT jsonb_agg(jsonb_build_object('scope', s.scope, 'channel', s.channel,
                                                     'topic_id', s.topic_id, 'reason', s.reason))
                 FROM suppressions s WHERE s.email_hash = c.email_hash), '[]') AS suppressions
FROM claimed m
JOIN contacts c ON c.id = m.contact_id
JOIN template_versions tv ON tv.id = m.template_version_id
ORDER BY m.id

-- name: start_sending
-- The start mark, committed right before MAIL FROM: from here a crash leaves
-- the message `uncertain`. It is also the last check, read by key: an
-- address erased, hard-bounced or complained since the claim (and, for a
-- commercial message, one that opted out of email) is not started; the lane
-- then records it skipped.
UPDATE transactional_messages m
SET status = 'sending', attempts = m.attempts + 1,
    first_attempt_at = coalesce(m.first_attempt_at, now()), updated_at = now()
FROM contacts c
WHERE m.id = $1 AND m.status = 'claimed' AND m.worker = $2 AND c.id = m.contact_id
  AND c.erased_at IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM suppressions s
      WHERE s.email_hash = c.email_hash
        AND (s.reason IN ('hard_bounce', 'complaint', 'erasure')
             OR (m.basis = 'commercial'
                 AND (s.scope = 'global' OR (s.scope = 'channel' AND s.channel = 'email')))))
  AND NOT (m.basis = 'commercial' AND EXISTS (
      SELECT 1 FROM contact_channels ch
      WHERE ch.contact_id = c.id AND ch.channel = 'email' AND NOT ch.enabled))
RETURNING m.id

-- name: record_outcome
-- One message's outcome and archive, for a message this worker claimed; one
-- swept to `uncertain` because this worker's lease lapsed (it was slow, not
-- dead) still takes the outcome the worker knows: known beats uncertain. A
-- hard bounce (5.1.x, 5.2.1: $13) suppresses the address on the channel, as a
-- campaign's does. A statement per message: the lane carries one-to-one
-- notices and its latency is what matters (the campaign engine batches).
WITH updated AS (
    UPDATE transactional_messages
    SET status = $3, smtp_code = $4, smtp_reply = $5, skip_reason = $6,
        next_attempt_at = coalesce($7, next_attempt_at), message_id = coalesce($8, message_id),
        render_inputs = coalesce($9, render_inputs), sha256 = coalesce($10, sha256),
        size_bytes = coalesce($11, size_bytes), refusal = coalesce($12, refusal),
        replied_at = CASE WHEN $4::integer IS NOT NULL THEN clock_timestamp()
                          ELSE replied_at END,
        sent_at = CASE WHEN $3 = 'sent' THEN clock_timestamp() ELSE sent_at END,
        lease_until = NULL, updated_at = now()
    WHERE id = $1 AND status IN ('claimed', 'sending', 'uncertain') AND worker = $2
    RETURNING id, contact_id
), suppressed AS (
    INSERT INTO suppressions (email_hash, scope, channel, reason, source, detail)
    SELECT c.email_hash, 'channel', 'email', 'hard_bounce', 'smtp',
           jsonb_build_object('transactional_id', u.id)
    FROM updated u JOIN contacts c ON c.id = u.contact_id
    WHERE $13::boolean AND c.email_hash IS NOT NULL
    ON CONFLICT DO NOTHING
)
SELECT count(*) FROM updated

-- name: release
-- Claimed by a worker that stops before starting them: due again at once.
UPDATE transactional_messages
SET status = CASE WHEN attempts > 0 THEN 'deferred' ELSE 'queued' END,
    lease_until = NULL, worker = NULL, updated_at = now()
WHERE id = ANY($1::bigint[]) AND status = 'claimed' AND worker = $2

-- name: renew_leases
-- SKIP LOCKED, as the engine's renewal (send.sql): a row locked now is being
-- started or recorded by this worker, and waiting on it while holding others
-- could deadlock with that write; a skipped row is renewed next time.
UPDATE transactional_messages m
SET lease_until = now() + make_interval(secs => $2)
FROM (SELECT id FROM transactional_messages
      WHERE id = ANY($1::bigint[]) AND status IN ('claimed', 'sending') AND worker = $3
      FOR NO KEY UPDATE SKIP LOCKED) mine
WHERE m.id = mine.id

-- name: sweep_leases
-- Leases of a worker that died: a claimed message never reached SMTP and is
-- due again (nobody left unsent); a started one may have been delivered, so
-- it becomes `uncertain` and is never resent on its own (DESIGN "ledger").
-- Returns how many became uncertain.
WITH swept AS (
    UPDATE transactional_messages
    SET status = CASE WHEN status = 'sending' THEN 'uncertain'
                      WHEN attempts > 0 THEN 'deferred' ELSE 'queued' END,
        lease_until = NULL, worker = CASE WHEN status = 'sending' THEN worker END,
        updated_at = now()
    WHERE status IN ('claimed', 'sending') AND lease_until < now()
    RETURNING status
)
SELECT count(*) FILTER (WHERE status = 'uncertain') FROM swept

-- ---------------------------------------------------------------- report

-- name: report
-- Messages enqueued since $1, by template, basis and state, with the
-- refusals' reasons and how many went through an opt-out (and why).
SELECT template, basis, status, refusal, note IS NOT NULL AS overrode, count(*) AS messages
FROM transactional_messages
WHERE enqueued_at >= $1
GROUP BY template, basis, status, refusal, note IS NOT NULL
ORDER BY template, basis, status, refusal

-- name: report_notes
-- The messages delivered through an opt-out, each with its reason.
SELECT m.id, m.template, m.basis, m.status, m.note, c.email
FROM transactional_messages m LEFT JOIN contacts c ON c.id = m.contact_id
WHERE m.enqueued_at >= $1 AND m.note IS NOT NULL
ORDER BY m.id
LIMIT $2

-- name: message_show
SELECT m.id, m.template, m.basis, m.status, m.refusal, m.note, m.idempotency_key,
       m.attempts, m.smtp_code, m.smtp_reply, m.skip_reason, m.message_id, m.enqueued_at,
       m.replied_at, m.sent_at, m.next_attempt_at, m.data, m.sha256, m.size_bytes,
       m.render_inputs, m.template_version_id, tv.name AS version_name, tv.files,
       c.email
FROM transactional_messages m
JOIN template_versions tv ON tv.id = m.template_version_id
LEFT JOIN contacts c ON c.id = m.contact_id
WHERE m.id = $1

-- name: messages_page
-- The console's recent messages: newest first, a keyset page below id $1 (NULL: the
-- first), of template $2 (NULL: any). The primary key orders them; no count of the rest.
SELECT m.id, m.template, m.basis, m.status, m.refusal, m.smtp_code, m.enqueued_at, m.sent_at,
       c.email
FROM transactional_messages m LEFT JOIN contacts c ON c.id = m.contact_id
WHERE ($1::bigint IS NULL OR m.id < $1) AND ($2::text IS NULL OR m.template = $2)
ORDER BY m.id DESC LIMIT $3
