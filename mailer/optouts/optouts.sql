-- Withdrawing consent, as every door does it (the tracker's unsubscribe page,
-- its one-click POST and preference centre; inbound's mailto unsubscribe and
-- complaints). Run by mailer/optouts/store.py on the caller's connection, in
-- the caller's transaction.

-- name: contact_lock
-- Serialises every opt-out and preference change of one contact: two one-click
-- POSTs arriving together (mailbox providers retry), or a one-click and the
-- mailto of the same message, must not both append.
SELECT email_hash FROM contacts WHERE id = $1 AND erased_at IS NULL FOR NO KEY UPDATE

-- name: channels_withdraw
-- $1 contact, $2 channels, $3 email hash, $4 source, $5 ledger evidence,
-- $6 suppression detail. Idempotent: the ledger gains a withdraw row only
-- when the channel's latest consent row is not already a withdraw backed by
-- a suppression; the suppression key makes repeats no-ops; the preference
-- row is written only when it changes.
WITH wanted AS (
    SELECT DISTINCT unnest($2::text[]) AS channel
), state AS (
    SELECT w.channel,
           (SELECT l.action FROM consents l
            WHERE l.contact_id = $1 AND l.channel = w.channel AND l.topic_id IS NULL
            ORDER BY l.obtained_at DESC, l.id DESC LIMIT 1) AS last_action,
           EXISTS (SELECT 1 FROM suppressions s
                   WHERE s.email_hash = $3 AND s.scope = 'channel' AND s.channel = w.channel
                     AND s.reason = 'unsubscribe') AS suppressed
    FROM wanted w
), logged AS (
    INSERT INTO consents (contact_id, channel, action, kind, topic_id, source, obtained_at,
                          evidence)
    SELECT $1, s.channel, 'withdraw', NULL, NULL, $4, now(), $5::jsonb
    FROM state s
    WHERE NOT (s.last_action IS NOT DISTINCT FROM 'withdraw' AND s.suppressed)
    RETURNING 1
), suppressed AS (
    INSERT INTO suppressions (email_hash, scope, channel, topic_id, reason, source, detail)
    SELECT $3, 'channel', w.channel, NULL, 'unsubscribe', $4, $6::jsonb FROM wanted w
    ON CONFLICT DO NOTHING
    RETURNING 1
), prefs AS (
    INSERT INTO contact_channels (contact_id, channel, enabled)
    SELECT $1, w.channel, false FROM wanted w
    ON CONFLICT (contact_id, channel) DO UPDATE SET enabled = false, updated_at = now()
        WHERE contact_channels.enabled
    RETURNING 1
)
SELECT (SELECT count(*) FROM logged) + (SELECT count(*) FROM suppressed)
       + (SELECT count(*) FROM prefs) AS changed

-- name: topics_withdraw
-- $1 contact, $2 topic ids, $3 email hash, $4 source, $5 evidence, $6 detail.
-- The same idempotency rule as channels_withdraw, per topic; topic rows are
-- preference history on the email channel with no kind.
WITH wanted AS (
    SELECT DISTINCT unnest($2::bigint[]) AS topic_id
), state AS (
    SELECT w.topic_id,
           (SELECT l.action FROM consents l
            WHERE l.contact_id = $1 AND l.topic_id = w.topic_id
            ORDER BY l.obtained_at DESC, l.id DESC LIMIT 1) AS last_action,
           EXISTS (SELECT 1 FROM suppressions s
                   WHERE s.email_hash = $3 AND s.scope = 'topic' AND s.topic_id = w.topic_id
                     AND s.reason = 'unsubscribe') AS suppressed
    FROM wanted w
), logged AS (
    INSERT INTO consents (contact_id, channel, action, kind, topic_id, source, obtained_at,
                          evidence)
    SELECT $1, 'email', 'withdraw', NULL, s.topic_id, $4, now(), $5::jsonb
    FROM state s
    WHERE NOT (s.last_action IS NOT DISTINCT FROM 'withdraw' AND s.suppressed)
    RETURNING 1
), suppressed AS (
    INSERT INTO suppressions (email_hash, scope, channel, topic_id, reason, source, detail)
    SELECT $3, 'topic', NULL, w.topic_id, 'unsubscribe', $4, $6::jsonb FROM wanted w
    ON CONFLICT DO NOTHING
    RETURNING 1
), prefs AS (
    INSERT INTO contact_topics (contact_id, topic_id, subscribed, source)
    SELECT $1, w.topic_id, false, $4 FROM wanted w
    ON CONFLICT (contact_id, topic_id) DO UPDATE
        SET subscribed = false, source = EXCLUDED.source, updated_at = now()
        WHERE contact_topics.subscribed
    RETURNING 1
)
SELECT (SELECT count(*) FROM logged) + (SELECT count(*) FROM suppressed)
       + (SELECT count(*) FROM prefs) AS changed

-- name: outbox_unsubscribed
-- contact.unsubscribed for the webhooks (the SMS vendor's cue), written in the
-- opt-out's own transaction: an opt-out committed is an event that will be
-- delivered. $1 contact, $2 campaign (or NULL), $3 what was withdrawn.
SELECT webhook_emit(jsonb_build_array(jsonb_build_object(
    'type', 'contact.unsubscribed', 'contact_id', $1::bigint, 'campaign_id', $2::bigint,
    'data', $3::jsonb)))

-- name: contact_by_email
-- An opt-out told by another system (API, CLI) names the person by address.
SELECT id FROM contacts WHERE email = $1 AND erased_at IS NULL

-- name: topic_ids_by_slug
SELECT slug, id FROM topics WHERE slug = ANY ($1::text[])
