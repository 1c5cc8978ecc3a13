-- Every statement the tracker runs, by name. Loaded once at start
-- (tracker/store.py); a missing name fails there, not on a recipient's click.

-- ---------------------------------------------------------------- health

-- name: ping
SELECT 1

-- name: background_timeouts
-- $1 milliseconds. The tracker's connections start with a short
-- statement_timeout and lock_timeout (tracker.db_statement_timeout_ms), made
-- for requests someone waits on; the event flusher's batches and partition
-- upkeep may take longer and keep no one waiting, so their own transaction
-- lifts both (is_local: the setting ends with the transaction).
SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $1, true)

-- name: ensure_event_partitions
-- This month and the next two exist before their first event arrives; rows
-- outside them still land in events_default, so a missed call loses nothing.
SELECT ensure_event_partitions(current_date, 3)

-- ---------------------------------------------------------------- events

-- name: events_inbox_create
-- Opens carry only a delivery id (the token has no campaign), and looking the
-- campaign up per hit would cost one query per pixel: the very thing the
-- buffer avoids. So a batch is COPYed into a per-session temporary table and
-- resolved against deliveries in one INSERT … SELECT. ON COMMIT DELETE ROWS
-- and IF NOT EXISTS keep it valid across pooled sessions and transaction-mode
-- poolers alike.
-- Times travel as unix seconds (float8: microsecond-exact for this era) and addresses as
-- text: binary COPY encodes those in a fraction of what a datetime or an inet costs in the
-- tracker's process, and Postgres converts them below.
CREATE TEMPORARY TABLE IF NOT EXISTS tracker_events_inbox (
    occurred_at float8 NOT NULL,
    kind        text NOT NULL,
    delivery_id bigint NOT NULL,
    link_id     bigint,
    machine     boolean NOT NULL,
    user_agent  text,
    ip_prefix   text
) ON COMMIT DELETE ROWS

-- name: events_inbox_move
-- A delivery that no longer exists (a token for a row someone deleted) has no
-- campaign: its events are dropped here and counted by the caller.
INSERT INTO events (occurred_at, kind, delivery_id, campaign_id, link_id, machine, user_agent,
                    ip_prefix)
SELECT to_timestamp(i.occurred_at), i.kind, i.delivery_id, d.campaign_id, i.link_id, i.machine,
       i.user_agent, i.ip_prefix::cidr
FROM tracker_events_inbox i
JOIN deliveries d ON d.id = i.delivery_id

-- name: click_target
-- $1 delivery, $2 link. The link as registered and, when the delivery exists,
-- its campaign and send time: apart, because the tracker caches links by id
-- (they never change once registered) and still redirects to a known link
-- while Postgres cannot answer. The handler redirects only when both
-- campaigns agree: a click token naming another campaign's link finds
-- nothing (and never a URL taken from the request).
SELECT l.url, l.campaign_id, d.campaign_id AS delivery_campaign_id, d.sent_at
FROM links l
LEFT JOIN deliveries d ON d.id = $1
WHERE l.id = $2

-- ---------------------------------------------------------------- pages

-- name: recipient
-- Who is unsubscribing from what: the contact, the campaign's topic and the
-- sender. CASL s.6(2)(a) and the pages name the business that sends, as the
-- campaign file spells it (sender.business_name, mailer/campaigns/definition.py),
-- else its From display name; never the campaign's own name, which is a
-- subject line ("Service reminder — October"), not an identity. NULL only for
-- a definition without either (none the campaign file accepts): the pages
-- then say "this sender".
SELECT d.id AS delivery_id, d.campaign_id, c.id AS contact_id, c.email, c.email_hash,
       -- The topic's names per language (the page picks the reader's) and the
       -- campaign's zone, in which the pages print timestamps as its footer did.
       t.slug AS topic_slug, t.names AS topic_names, p.definition ->> 'timezone' AS timezone,
       c.name, c.locale, c.erased_at IS NOT NULL AS erased,
       coalesce(nullif(p.definition #>> '{sender,business_name}', ''),
                nullif(p.definition ->> 'from_name', '')) AS sender,
       p.channel, t.id AS topic_id, t.name AS topic_name
FROM deliveries d
JOIN contacts c ON c.id = d.contact_id
JOIN campaigns p ON p.id = d.campaign_id
JOIN topics t ON t.id = p.topic_id
WHERE d.id = $1
UNION ALL
-- A transactional message (its id comes from the deliveries' sequence, so a
-- token's number is never both): no campaign, and a topic only for a
-- commercial template. Its unsubscribe is from commercial email (CASL s.11).
SELECT m.id, NULL, c.id, c.email, c.email_hash, t.slug, t.names,
       m.definition #>> '{campaign,timezone}', c.name, c.locale, c.erased_at IS NOT NULL,
       coalesce(nullif(m.definition #>> '{campaign,sender,business_name}', ''),
                nullif(m.definition #>> '{campaign,from_name}', '')),
       'email', t.id, t.name
FROM transactional_messages m
JOIN contacts c ON c.id = m.contact_id
LEFT JOIN topics t ON m.basis = 'commercial' AND t.slug = m.definition #>> '{campaign,topic}'
WHERE m.id = $1

-- name: contact_ledger
SELECT l.id, l.channel, l.action, l.kind, l.topic_id, t.name AS topic_name, l.source,
       l.obtained_at, l.ends_at, t.slug AS topic_slug, t.names AS topic_names,
       l.obtained_date_only, l.ends_date_only
FROM consents l LEFT JOIN topics t ON t.id = l.topic_id
WHERE l.contact_id = $1
ORDER BY l.obtained_at, l.id

-- name: contact_channels
SELECT channel, enabled FROM contact_channels WHERE contact_id = $1

-- name: contact_topics
-- Every topic, with the contact's own choice where it made one.
SELECT t.id, t.name, t.description, t.default_subscribed, ct.subscribed, t.slug, t.names
FROM topics t
LEFT JOIN contact_topics ct ON ct.topic_id = t.id AND ct.contact_id = $1
ORDER BY t.name, t.id

-- name: contact_suppressions
SELECT scope, channel, topic_id, reason FROM suppressions WHERE email_hash = $1

-- ---------------------------------------------------------------- opt-outs

-- Opt-outs themselves (contact_lock, channels_withdraw, topics_withdraw) are
-- mailer/optouts/optouts.sql: inbound's mailto unsubscribe records the same rows.

-- ---------------------------------------------------------------- re-subscribe

-- name: channels_grant
-- $1 contact, $2 channels, $3 email hash, $4 evidence. Called only for a
-- switch the person turned on: that act is express consent (CASL s.10(1)),
-- recorded as such. Lifts only the person's own 'unsubscribe' suppression;
-- hard bounces, complaints, registries and manual blocks stay.
WITH wanted AS (
    SELECT DISTINCT unnest($2::text[]) AS channel
), lifted AS (
    DELETE FROM suppressions s USING wanted w
    WHERE s.email_hash = $3 AND s.scope = 'channel' AND s.channel = w.channel
      AND s.reason = 'unsubscribe'
    RETURNING 1
), prefs AS (
    INSERT INTO contact_channels (contact_id, channel, enabled)
    SELECT $1, w.channel, true FROM wanted w
    ON CONFLICT (contact_id, channel) DO UPDATE SET enabled = true, updated_at = now()
        WHERE NOT contact_channels.enabled
    RETURNING 1
)
INSERT INTO consents (contact_id, channel, action, kind, topic_id, source, obtained_at, evidence)
SELECT $1, w.channel, 'grant', 'express', NULL, 'preference centre', now(), $4::jsonb
FROM wanted w

-- name: topics_grant
-- $1 contact, $2 topic ids, $3 email hash, $4 evidence. The topic row is
-- preference history (kind NULL, as the import writes it); the person's own
-- topic opt-out suppression is lifted, no other.
WITH wanted AS (
    SELECT DISTINCT unnest($2::bigint[]) AS topic_id
), lifted AS (
    DELETE FROM suppressions s USING wanted w
    WHERE s.email_hash = $3 AND s.scope = 'topic' AND s.topic_id = w.topic_id
      AND s.reason = 'unsubscribe'
    RETURNING 1
), prefs AS (
    INSERT INTO contact_topics (contact_id, topic_id, subscribed, source)
    SELECT $1, w.topic_id, true, 'preference centre' FROM wanted w
    ON CONFLICT (contact_id, topic_id) DO UPDATE
        SET subscribed = true, source = EXCLUDED.source, updated_at = now()
        WHERE NOT contact_topics.subscribed
    RETURNING 1
)
INSERT INTO consents (contact_id, channel, action, kind, topic_id, source, obtained_at, evidence)
SELECT $1, 'email', 'grant', NULL, w.topic_id, 'preference centre', now(), $4::jsonb
FROM wanted w

-- ---------------------------------------------------------------- re-permission

-- name: confirm_campaign
-- The re-permission campaign behind a delivery: its slug (the ledger source)
-- and the exact consent text its message and the "I agree" page show.
SELECT p.slug, p.definition ->> 'consent_text' AS consent_text
FROM campaigns p
WHERE p.id = $1 AND p.kind = 'repermission'

-- name: express_grant
-- $1 contact, $2 source, $3 evidence. Appends an express grant on email
-- unless the contact's latest email consent row already is one (a repeat
-- POST, a double click): idempotent under contact_lock. Returns the rows added.
WITH latest AS (
    SELECT l.action, l.kind FROM consents l
    WHERE l.contact_id = $1 AND l.channel = 'email' AND l.topic_id IS NULL
      AND l.action IN ('grant', 'withdraw')
    ORDER BY l.obtained_at DESC, l.id DESC LIMIT 1
), added AS (
    INSERT INTO consents (contact_id, channel, action, kind, topic_id, source, obtained_at,
                          evidence)
    SELECT $1, 'email', 'grant', 'express', NULL, $2, now(), $3::jsonb
    WHERE NOT EXISTS (SELECT 1 FROM latest WHERE action = 'grant' AND kind = 'express')
    RETURNING 1
)
SELECT count(*) FROM added
