-- Sign-up forms: their definitions and consent texts (the CLI), and the two
-- steps of a sign-up (the tracker, later the API). Run by mailer/forms/store.py.

-- ---------------------------------------------------------------- forms

-- name: form_insert
-- $1 slug … $9 proof_of_work. NULL when the slug is taken (the caller says so).
INSERT INTO forms (slug, source, topic_ids, locales, double_opt_in, welcome, redirect_url,
                   origins, proof_of_work)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (slug) DO NOTHING
RETURNING id

-- name: form_text_add
-- $1 form, $2 locale, $3 text, $4 sha256. A new version unless the latest one
-- of that language already says exactly this (editing to the same words is a
-- no-op, not a version). Serialised per form by the caller's row lock.
WITH latest AS (
    SELECT version, sha256 FROM form_texts
    WHERE form_id = $1 AND locale = $2
    ORDER BY version DESC LIMIT 1
)
INSERT INTO form_texts (form_id, locale, version, text, sha256)
SELECT $1, $2, coalesce((SELECT version FROM latest), 0) + 1, $3, $4
WHERE NOT EXISTS (SELECT 1 FROM latest WHERE sha256 = $4)
RETURNING version

-- name: form_lock
-- Editing a form's texts takes its row lock, so two edits number their versions in turn.
SELECT id FROM forms WHERE slug = $1 FOR NO KEY UPDATE

-- name: form_by_slug
SELECT id, slug, source, topic_ids, locales, double_opt_in, welcome, redirect_url, origins,
       proof_of_work, disabled_at, created_at
FROM forms WHERE slug = $1

-- name: forms_all
SELECT id, slug, source, topic_ids, locales, double_opt_in, welcome, redirect_url, origins,
       proof_of_work, disabled_at, created_at
FROM forms ORDER BY slug

-- name: form_texts_latest
-- $1 form ids. The current text of each form and language.
SELECT DISTINCT ON (form_id, locale) id, form_id, locale, version, text, sha256, created_at
FROM form_texts WHERE form_id = ANY($1::bigint[])
ORDER BY form_id, locale, version DESC

-- name: form_text_history
SELECT id, form_id, locale, version, text, sha256, created_at
FROM form_texts WHERE form_id = $1 ORDER BY locale, version

-- name: form_text_by_id
-- $1 text, $2 form: the version an embedded page showed, only if it is that form's.
SELECT id, form_id, locale, version, text, sha256, created_at FROM form_texts
WHERE id = $1 AND form_id = $2

-- name: form_topics
-- $1 topic ids: the topics a form offers, with their names per language.
SELECT id, slug, name, names FROM topics WHERE id = ANY($1::bigint[]) ORDER BY name, id

-- name: topics_by_slug
SELECT id, slug FROM topics WHERE slug = ANY($1::text[])

-- name: form_disable
UPDATE forms SET disabled_at = coalesce(disabled_at, now()) WHERE slug = $1 RETURNING id

-- name: form_counts
-- Pending and confirmed requests per form, for `forms list`.
SELECT form_id, count(*) FILTER (WHERE state = 'pending') AS pending,
       count(*) FILTER (WHERE state = 'confirmed') AS confirmed
FROM signup_requests GROUP BY form_id

-- ---------------------------------------------------------------- sign-up

-- name: address_state
-- $1 email hash, $2 mail interval. What decides a request's fate, read in one
-- statement: the suppressions that keep this address from any mail (hard
-- bounce, complaint, erasure, registry, manual: never lifted by a form), its
-- own unsubscribe (which only a confirmed double opt-in lifts), and whether a
-- confirmation mail already went to it within the interval.
SELECT
    EXISTS (SELECT 1 FROM suppressions s
            WHERE s.email_hash = $1 AND s.reason <> 'unsubscribe'
              AND (s.scope = 'global' OR (s.scope = 'channel' AND s.channel = 'email')))
        AS blocked,
    EXISTS (SELECT 1 FROM suppressions s
            WHERE s.email_hash = $1 AND s.reason = 'unsubscribe'
              AND (s.scope = 'global' OR (s.scope = 'channel' AND s.channel = 'email')))
        AS unsubscribed,
    EXISTS (SELECT 1 FROM signup_requests r
            WHERE r.email_hash = $1 AND r.mailed AND r.requested_at > now() - $2::interval)
        AS recently_mailed

-- name: request_insert
-- $1 form … $9 mailed, $10 lifetime. The pending request with the request
-- step's evidence; its id is what the confirmation token names.
INSERT INTO signup_requests (form_id, text_id, email_hash, email, name, locale, topic_ids,
                             evidence, mailed, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() + $10::interval)
RETURNING id, requested_at

-- name: request_unmail
-- The confirmation mail could not be queued: the request goes, so a retry is not refused
-- by the per-address limit.
DELETE FROM signup_requests WHERE id = $1

-- name: request_lock
-- $1 request. The request being confirmed, locked so a double POST confirms once.
SELECT r.id, r.form_id, r.text_id, r.email_hash, r.state, r.email, r.name, r.locale,
       r.topic_ids, r.evidence, r.requested_at, r.expires_at, r.confirmed_at,
       r.expires_at <= now() AS expired
FROM signup_requests r WHERE r.id = $1 FOR UPDATE

-- name: request_peek
-- The same, read only: the confirmation page's GET writes nothing.
SELECT r.id, r.form_id, r.text_id, r.email_hash, r.state, r.email, r.name, r.locale,
       r.topic_ids, r.evidence, r.requested_at, r.expires_at, r.confirmed_at,
       r.expires_at <= now() AS expired
FROM signup_requests r WHERE r.id = $1

-- name: request_confirmed
-- The ledger now holds the evidence: the request keeps only the address hash,
-- its times (the per-address mail limit) and its language (the pages of a
-- second click) until it expires.
UPDATE signup_requests
SET state = 'confirmed', confirmed_at = now(), email = NULL, name = NULL, evidence = NULL
WHERE id = $1

-- name: contact_create_lock
-- A confirmed sign-up may create a contact: under the shared form of the
-- contact import's advisory lock (mailer/core/locks.py), so that it waits for
-- a running import instead of creating a contact the import would take for
-- one of its own.
SELECT pg_advisory_xact_lock_shared($1)

-- name: contact_upsert
-- $1 email, $2 hash, $3 name, $4 locale. The contact a confirmed sign-up is
-- about: created if new; an existing contact keeps its name unless it had none.
-- Locked like every consent change of a contact (contact_lock in optouts.sql).
WITH added AS (
    INSERT INTO contacts (email, email_hash, name, locale) VALUES ($1, $2, $3, $4)
    ON CONFLICT (email) DO NOTHING
    RETURNING id
)
SELECT id FROM added
UNION ALL
SELECT id FROM contacts WHERE email = $1
LIMIT 1

-- name: contact_name_fill
UPDATE contacts SET name = $2::text, updated_at = now()
WHERE id = $1 AND name IS NULL AND $2::text IS NOT NULL

-- name: signup_grant
-- $1 contact, $2 hash, $3 source, $4 evidence, $5 topic ids. The express grant
-- on email with the evidence of both steps; the person's own unsubscribe
-- suppressions (email, everything, the chosen topics) are lifted, nothing
-- else (a hard bounce or complaint was refused before). The chosen topics are
-- subscribed, each with its ledger row. Returns the grant's id.
WITH lifted AS (
    DELETE FROM suppressions s
    WHERE s.email_hash = $2 AND s.reason = 'unsubscribe'
      AND (s.scope = 'global' OR (s.scope = 'channel' AND s.channel = 'email')
           OR (s.scope = 'topic' AND s.topic_id = ANY($5::bigint[])))
    RETURNING 1
), channel AS (
    INSERT INTO contact_channels (contact_id, channel, enabled) VALUES ($1, 'email', true)
    ON CONFLICT (contact_id, channel) DO UPDATE SET enabled = true, updated_at = now()
        WHERE NOT contact_channels.enabled
    RETURNING 1
), topics AS (
    INSERT INTO contact_topics (contact_id, topic_id, subscribed, source)
    SELECT $1, t, true, $3 FROM unnest($5::bigint[]) AS t
    ON CONFLICT (contact_id, topic_id) DO UPDATE
        SET subscribed = true, source = EXCLUDED.source, updated_at = now()
    RETURNING 1
), topic_rows AS (
    INSERT INTO consents (contact_id, channel, action, kind, topic_id, source, obtained_at,
                          evidence)
    SELECT $1, 'email', 'grant', NULL, t, $3, now(), $4::jsonb FROM unnest($5::bigint[]) AS t
    RETURNING 1
)
INSERT INTO consents (contact_id, channel, action, kind, topic_id, source, obtained_at, evidence)
VALUES ($1, 'email', 'grant', 'express', NULL, $3, now(), $4::jsonb)
RETURNING id

-- name: contact_delete_allow
-- The expiry sweep's transaction may delete unreferenced contacts (the
-- contacts_no_delete trigger reads this; local: it ends with the transaction).
SELECT set_config('mailer.delete_unreferenced_contacts', 'on', true)

-- name: requests_expire
-- $1 batch size, $2 the confirmation mails' idempotency-key prefix. Pending
-- requests past their time go with their personal data (GDPR art. 5(1)(e));
-- confirmed ones hold only a hash and go too. So does what an unconfirmed
-- request left behind on the transactional lane, in the same statement: its
-- confirmation message is scrubbed as an erasure scrubs one (compliance.sql:
-- erase_transactional, same columns kept: template, state, dates, Message-ID,
-- SHA-256), and the contact the lane created for it is deleted when nothing
-- else refers to it (no consent, preference, delivery, bounce, other message
-- or other request); a contact who existed before is left as it was. A
-- request whose mail is being sent right now waits for the next sweep (the
-- lane would write the SMTP reply back). Bounded so a backlog cannot hold a
-- long transaction.
WITH due AS (
    SELECT r.id FROM signup_requests r
    LEFT JOIN transactional_messages m ON m.idempotency_key = $2::text || r.id
    WHERE r.expires_at <= now() AND m.status IS DISTINCT FROM 'claimed'
      AND m.status IS DISTINCT FROM 'sending'
    ORDER BY r.expires_at LIMIT $1
), gone AS (
    DELETE FROM signup_requests WHERE id IN (SELECT id FROM due)
    RETURNING id, form_id, state, email_hash
), mail AS (
    SELECT m.id, m.contact_id, m.contact_created
    FROM gone g JOIN transactional_messages m ON m.idempotency_key = $2::text || g.id
    WHERE g.state = 'pending'
), orphan AS (
    SELECT DISTINCT k.id FROM mail x JOIN contacts k ON k.id = x.contact_id
    WHERE x.contact_created
      AND NOT EXISTS (SELECT 1 FROM consents c WHERE c.contact_id = k.id)
      AND NOT EXISTS (SELECT 1 FROM contact_channels c WHERE c.contact_id = k.id)
      AND NOT EXISTS (SELECT 1 FROM contact_topics c WHERE c.contact_id = k.id)
      AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.contact_id = k.id)
      AND NOT EXISTS (SELECT 1 FROM bounces b WHERE b.contact_id = k.id)
      AND NOT EXISTS (SELECT 1 FROM transactional_messages o
                      WHERE o.contact_id = k.id AND o.id NOT IN (SELECT id FROM mail))
      -- The statement's snapshot still holds the deleted requests: skip them.
      AND NOT EXISTS (SELECT 1 FROM signup_requests r
                      WHERE r.email_hash = k.email_hash AND r.id NOT IN (SELECT id FROM gone))
), dropped AS (
    DELETE FROM contacts WHERE id IN (SELECT id FROM orphan)
    RETURNING id
), scrubbed AS (
    UPDATE transactional_messages m
    SET status = CASE WHEN m.status IN ('queued', 'deferred') THEN 'skipped' ELSE m.status END,
        skip_reason = CASE WHEN m.status IN ('queued', 'deferred') THEN 'expired'
                           ELSE m.skip_reason END,
        data = '{}', smtp_reply = NULL,
        render_inputs = CASE WHEN m.render_inputs IS NULL THEN NULL
                             ELSE jsonb_build_object(
                                 'erased_at', now(),
                                 'message_id', m.render_inputs #> '{envelope,message_id}',
                                 'date', m.render_inputs #> '{envelope,date}') END,
        -- A deleted contact is named nowhere (as a message refused for erasure names none).
        contact_id = CASE WHEN m.contact_id IN (SELECT id FROM dropped) THEN NULL
                          ELSE m.contact_id END,
        updated_at = now()
    FROM mail x
    WHERE m.id = x.id
    RETURNING m.id
)
SELECT f.slug, count(*) FILTER (WHERE g.state = 'pending') AS expired
FROM gone g JOIN forms f ON f.id = g.form_id
GROUP BY f.slug
