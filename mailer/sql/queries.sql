-- Every statement the mailer runs, by name. Loaded once at start
-- (mailer/queries.py); the store calls them by these names.

-- ---------------------------------------------------------------- migrations

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

-- name: migrations_table_exists
-- `db status` reads without creating anything.
SELECT to_regclass('schema_migrations') IS NOT NULL

-- name: migrations_record
INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)

-- ---------------------------------------------------------------- topics

-- name: topic_upsert
INSERT INTO topics (slug, name, description, default_subscribed)
VALUES ($1, $2, $3, $4)
ON CONFLICT (slug) DO UPDATE
    SET name = EXCLUDED.name, description = EXCLUDED.description,
        default_subscribed = EXCLUDED.default_subscribed
RETURNING id

-- name: topics_list
SELECT id, slug, name, description, default_subscribed FROM topics ORDER BY slug

-- ---------------------------------------------------------------- contact import

-- name: import_session_settings
SELECT set_config('jit', 'off', true), set_config('work_mem', '64MB', true)

-- name: import_create_staging
-- One row per valid CSV line. Temporary and dropped at commit: a failed or
-- refused import leaves nothing behind.
CREATE TEMPORARY TABLE import_rows (
    line             integer NOT NULL,
    email            text NOT NULL,
    email_hash       bytea NOT NULL,
    name             text,
    locale           text,
    attributes       jsonb NOT NULL,
    last_activity_at timestamptz,
    tracking         boolean,
    channel          text NOT NULL,
    kind             text,
    source           text,
    obtained_at      timestamptz,
    ends_at          timestamptz,
    topics           text[] NOT NULL
) ON COMMIT DROP

-- name: import_index_staging
-- After COPY (indexing while loading is slower); the merge joins on email.
CREATE INDEX ON import_rows (email, line)

-- name: import_analyze_staging
-- Temporary tables are never auto-analyzed; without statistics the planner
-- guesses 1,000 rows and picks nested loops for a million.
ANALYZE import_rows

-- name: import_merge_rows
-- Duplicates in the file merge into one contact: the last non-empty value of
-- each field wins, attributes merge key by key (later lines win), last
-- activity is the latest seen.
CREATE TEMPORARY TABLE import_contacts ON COMMIT DROP AS
SELECT NULL::bigint AS id,
       email,
       email_hash,
       (array_agg(name ORDER BY line DESC) FILTER (WHERE name IS NOT NULL))[1] AS name,
       (array_agg(locale ORDER BY line DESC) FILTER (WHERE locale IS NOT NULL))[1] AS locale,
       jsonb_merge_agg(attributes ORDER BY line) AS attributes,
       max(last_activity_at) AS last_activity_at,
       (array_agg(tracking ORDER BY line DESC) FILTER (WHERE tracking IS NOT NULL))[1] AS tracking
FROM import_rows
GROUP BY email, email_hash  -- the hash is a function of the address: one group per address

-- name: import_index_merged
CREATE UNIQUE INDEX ON import_contacts (email)

-- name: import_resolve_ids
-- Every merged address gets its contact id once, so later steps join the
-- small temp table instead of probing the 10 M-row contacts index again.
UPDATE import_contacts m SET id = c.id FROM contacts c WHERE c.email = m.email

-- name: import_lock_contacts
-- Whoever writes a contact's consents, topics or channels locks its row
-- first, as the tracker does (contact_lock): the ledger trigger locks the
-- contact's consent_current rows, and an import and a preference save that
-- took those and the topic rows in opposite orders deadlocked. In id order,
-- so two imports queue instead. (Contacts this import changed or created
-- are locked already; this takes the unchanged ones.)
SELECT count(*) FROM (
    SELECT 1 FROM contacts c JOIN import_contacts m ON m.id = c.id
    ORDER BY c.id
    FOR NO KEY UPDATE OF c
) locked

-- name: import_update_contacts
-- Existing contacts change only where the file says something new, so
-- re-importing the same file writes nothing. Empty cells never erase data.
UPDATE contacts c
SET name = coalesce(m.name, c.name),
    locale = coalesce(m.locale, c.locale),
    attributes = c.attributes || m.attributes,
    last_activity_at = greatest(c.last_activity_at, m.last_activity_at),
    tracking = coalesce(m.tracking, c.tracking),
    updated_at = now()
FROM import_contacts m
WHERE c.email = m.email
  AND (c.name, c.locale, c.attributes, c.last_activity_at, c.tracking)
      IS DISTINCT FROM
      (coalesce(m.name, c.name), coalesce(m.locale, c.locale), c.attributes || m.attributes,
       greatest(c.last_activity_at, m.last_activity_at), coalesce(m.tracking, c.tracking))

-- name: import_insert_contacts
INSERT INTO contacts (email, email_hash, name, locale, attributes, last_activity_at, tracking)
SELECT m.email, m.email_hash, m.name, coalesce(m.locale, $1), m.attributes, m.last_activity_at,
       coalesce(m.tracking, true)
FROM import_contacts m
WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.email = m.email)
ORDER BY m.email  -- the email index then fills in order, not at random
ON CONFLICT (email) DO NOTHING

-- name: import_insert_consents
-- The ledger gains a grant only when the file states one not yet recorded
-- (same contact, channel, kind, source, date and end). Re-imports add
-- nothing, and an old grant in a file never overrides a later withdrawal:
-- it is already in the ledger, so it is not appended again. Evidence names
-- the file and line (CASL s.13: proof of consent).
INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at, ends_at, evidence)
SELECT DISTINCT ON (c.id, r.channel, r.kind, r.source, r.obtained_at, r.ends_at)
       c.id, r.channel, 'grant', r.kind, r.source, r.obtained_at, r.ends_at,
       jsonb_build_object('import_id', $1::bigint, 'file', $2::text, 'line', r.line)
FROM import_rows r
JOIN import_contacts c ON c.email = r.email
WHERE r.kind IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM consents x
      WHERE x.contact_id = c.id AND x.channel = r.channel AND x.obtained_at = r.obtained_at
        AND x.action = 'grant' AND x.topic_id IS NULL AND x.kind = r.kind
        AND x.source = r.source AND x.ends_at IS NOT DISTINCT FROM r.ends_at)
ORDER BY c.id, r.channel, r.kind, r.source, r.obtained_at, r.ends_at, r.line

-- name: import_insert_topics
-- Subscribes contacts to the topics the file lists. A topic the person opted
-- out of stays opted out: an import never overrides a person's own choice.
-- The source names the import and line; the ledger keeps the person's own
-- preference changes (preference centre, unsubscribe).
INSERT INTO contact_topics (contact_id, topic_id, subscribed, source)
SELECT c.id, t.id, true, 'import ' || $1::bigint || ' line ' || min(r.line)
FROM import_rows r
CROSS JOIN LATERAL unnest(r.topics) AS listed (slug)
JOIN topics t ON t.slug = listed.slug
JOIN import_contacts c ON c.email = r.email
GROUP BY c.id, t.id
ON CONFLICT (contact_id, topic_id) DO NOTHING

-- name: import_suppressed_count
-- How many of the imported addresses are suppressed: they are kept as
-- contacts but will never be mailed, and the operator should know.
SELECT count(*) FROM import_contacts m
WHERE EXISTS (SELECT 1 FROM suppressions s WHERE s.email_hash = m.email_hash)

-- name: import_begin
-- Recorded first so that ledger evidence can name the import; committed
-- together with everything else, or not at all.
INSERT INTO imports (kind, file_name, file_sha256, rows_read, rows_valid, rows_rejected)
VALUES ($1, $2, $3, 0, 0, 0)
RETURNING id

-- name: import_finish
UPDATE imports SET rows_read = $2, rows_valid = $3, rows_rejected = $4, summary = $5
WHERE id = $1

-- ---------------------------------------------------------------- suppressions

-- name: suppress_create_staging
CREATE TEMPORARY TABLE import_suppressions (
    line       integer NOT NULL,
    email_hash bytea NOT NULL
) ON COMMIT DROP

-- name: suppress_insert
-- Keyed by address hash: works for addresses we have never seen as contacts
-- (a registry lists strangers too) and survives erasure.
INSERT INTO suppressions (email_hash, scope, channel, topic_id, reason, source, detail)
SELECT DISTINCT ON (email_hash) email_hash, $1, $2, $3, $4, $5,
       jsonb_build_object('import_id', $6::bigint, 'line', line)
FROM import_suppressions
ORDER BY email_hash, line
ON CONFLICT DO NOTHING

-- ---------------------------------------------------------------- a contact's story

-- name: contact_by_email
SELECT id, email, name, locale, attributes, last_activity_at, tracking, erased_at, created_at,
       updated_at
FROM contacts WHERE email = $1

-- name: contact_ledger
SELECT l.id, l.channel, l.action, l.kind, t.slug AS topic, l.source, l.obtained_at, l.ends_at,
       l.evidence, l.recorded_at
FROM consents l LEFT JOIN topics t ON t.id = l.topic_id
WHERE l.contact_id = $1
ORDER BY l.obtained_at, l.id

-- name: contact_topic_prefs
SELECT t.slug, ct.subscribed, ct.updated_at
FROM contact_topics ct JOIN topics t ON t.id = ct.topic_id
WHERE ct.contact_id = $1 ORDER BY t.slug

-- name: contact_channel_prefs
SELECT channel, enabled, updated_at FROM contact_channels WHERE contact_id = $1 ORDER BY channel

-- name: suppressions_for_hash
SELECT s.scope, s.channel, t.slug AS topic, s.reason, s.source, s.created_at
FROM suppressions s LEFT JOIN topics t ON t.id = s.topic_id
WHERE s.email_hash = $1 ORDER BY s.created_at, s.id

-- name: summary_counts
SELECT (SELECT count(*) FROM contacts WHERE erased_at IS NULL) AS contacts,
       (SELECT count(*) FROM consents) AS ledger_rows,
       (SELECT count(*) FROM suppressions) AS suppressions,
       (SELECT count(*) FROM topics) AS topics

-- ---------------------------------------------------------------- audience

-- name: audience
-- The consent rules of mailer/consent.py, set-based, in one pass over the
-- contacts: every contact gets the FIRST failing reason in Reason order, or
-- NULL (eligible) with the ledger row that justifies sending. A property
-- test proves this and consent.evaluate agree on random ledgers.
-- Parameters: $1 topic id, $2 topic is opt-out (default subscribed),
-- $3 channel, $4 policy, $5 send time, $6 "active within N months" or NULL;
-- the segment filter binds $7… . Markers /*…*/ are replaced by the store
-- with fixed fragments below (never with operator text).
-- Runs with TimeZone = UTC (the pool sets it): interval arithmetic on
-- timestamptz follows the session zone, and consent.add_months works in UTC.
WITH standing AS (
    -- Most contacts: their whole ledger on this channel was obtained by the
    -- send time, so their row of consent_current (migration 0005) answers.
    SELECT s.contact_id, s.withdrawn, s.best_id AS id, s.best_kind AS kind,
           s.best_source AS source, s.best_obtained_at AS obtained_at,
           s.best_valid_until AS valid_until
    FROM consent_current s
    WHERE s.channel = $3::text AND s.newest_at <= $5::timestamptz /*current_contacts*/
    UNION ALL
    -- The others (rows dated after the send time): the ledger itself, one
    -- grouped pass per contact through its index (consent_latest, 0004).
    SELECT s.contact_id, l.withdrawal IS NOT NULL, (b).id, (b).kind, (b).source,
           (b).obtained_at, (b).valid_until
    FROM consent_current s
    CROSS JOIN LATERAL (
        -- OFFSET 0 keeps this a per-contact subquery: flattened into a join,
        -- the planner would group the whole ledger for a handful of contacts.
        SELECT * FROM consent_latest($3, $5) x WHERE x.contact_id = s.contact_id OFFSET 0
    ) l
    CROSS JOIN LATERAL (
        SELECT consent_best(l.withdrawal[1], l.express[1], l.purchase[1], l.contract[1],
                            l.inquiry[1], l.publication[1], $5) AS b
    ) g
    WHERE s.channel = $3 AND s.newest_at > $5 /*current_contacts*/
), consent AS (
    -- GDPR: express consent only. The best grant is express whenever an
    -- express grant stands, so an implied best means none does.
    SELECT contact_id, withdrawn,
           e.keep AND id IS NOT NULL AND (valid_until IS NULL OR $5 < valid_until) AS valid,
           CASE WHEN e.keep THEN id END AS id, kind, source, obtained_at, valid_until
    FROM standing
    CROSS JOIN LATERAL (SELECT $4::text <> 'gdpr' OR kind = 'express' AS keep) e
), blocked AS (
    SELECT s.email_hash,
           bool_or(s.reason = 'hard_bounce') AS hard_bounced,
           bool_or(s.reason = 'complaint') AS complained,
           bool_or(s.reason = 'registry') AS registry,
           bool_or(s.scope = 'global' AND s.reason IN ('unsubscribe', 'manual', 'erasure'))
               AS suppressed_global,
           bool_or(s.scope = 'channel' AND s.reason IN ('unsubscribe', 'manual', 'erasure'))
               AS unsubscribed_channel,
           bool_or(s.scope = 'topic' AND s.reason IN ('unsubscribe', 'manual', 'erasure'))
               AS unsubscribed_topic
    FROM suppressions s
    WHERE (s.scope = 'global' OR (s.scope = 'channel' AND s.channel = $3)
           OR (s.scope = 'topic' AND s.topic_id = $1::bigint)) /*suppression_contacts*/
    GROUP BY s.email_hash
)
SELECT c.id AS contact_id,
       split_part(c.email, '@', 2) AS domain,
       r.reason,
       CASE WHEN r.reason IS NULL AND k.valid THEN k.id END AS consent_id,
       CASE WHEN r.reason IS NULL AND k.valid THEN k.kind END AS consent_kind,
       CASE WHEN r.reason IS NULL AND k.valid THEN k.source END AS consent_source,
       CASE WHEN r.reason IS NULL AND k.valid THEN k.obtained_at END AS consent_obtained_at,
       CASE WHEN r.reason IS NULL AND k.valid THEN k.valid_until END AS consent_valid_until
FROM contacts c
LEFT JOIN blocked b ON b.email_hash = c.email_hash
LEFT JOIN contact_channels ch ON ch.contact_id = c.id AND ch.channel = $3 /*channel_contacts*/
LEFT JOIN contact_topics ct ON ct.contact_id = c.id AND ct.topic_id = $1 /*topic_contacts*/
LEFT JOIN consent k ON k.contact_id = c.id
CROSS JOIN LATERAL (
    SELECT CASE
               -- CAN-SPAM 15 U.S.C. 7704(a)(4): opt-out model; only an
               -- unrenewed opt-out excludes.
               WHEN $4 = 'can_spam' THEN
                   CASE WHEN k.withdrawn AND k.id IS NULL THEN 'consent_withdrawn' END
               WHEN k.valid THEN NULL
               WHEN k.id IS NOT NULL THEN 'consent_expired'
               WHEN k.withdrawn THEN 'consent_withdrawn'
               ELSE 'no_consent'
           END AS consent_reason
) v
CROSS JOIN LATERAL (
    -- The first failing reason, in the order of consent.Reason.
    SELECT CASE
               WHEN NOT coalesce(/*segment*/ true, false) THEN 'segment'
               WHEN c.erased_at IS NOT NULL THEN 'erased'
               WHEN b.hard_bounced THEN 'hard_bounced'
               WHEN b.complained THEN 'complained'
               WHEN b.registry THEN 'registry'
               WHEN b.suppressed_global THEN 'suppressed_global'
               WHEN b.unsubscribed_channel OR NOT ch.enabled THEN 'unsubscribed_channel'
               WHEN b.unsubscribed_topic OR NOT ct.subscribed THEN 'unsubscribed_topic'
               WHEN ct.subscribed IS NULL AND NOT $2::boolean THEN 'not_subscribed_topic'
               WHEN v.consent_reason IS NOT NULL THEN v.consent_reason
               WHEN $6::integer IS NOT NULL AND (c.last_activity_at IS NULL
                    OR c.last_activity_at < $5 - make_interval(months => $6::integer))
                   THEN 'inactive'
           END AS reason
) r
WHERE true /*contacts*/

-- name: audience_fragment_current_contacts
AND s.contact_id = ANY(:ids::bigint[])

-- name: audience_fragment_suppression_contacts
AND s.email_hash IN (SELECT email_hash FROM contacts WHERE id = ANY(:ids::bigint[]))

-- name: audience_fragment_channel_contacts
AND ch.contact_id = ANY(:ids::bigint[])

-- name: audience_fragment_topic_contacts
AND ct.contact_id = ANY(:ids::bigint[])

-- name: audience_fragment_contacts
AND c.id = ANY(:ids::bigint[])

-- One part of a whole audience computed on several connections at once: the
-- contacts with ids in [:lo, :hi], every table read by index range. (The
-- suppressions are few and keyed by address hash: each part reads them all.)

-- name: audience_range_current_contacts
AND s.contact_id BETWEEN :lo::bigint AND :hi::bigint

-- name: audience_range_channel_contacts
AND ch.contact_id BETWEEN :lo::bigint AND :hi::bigint

-- name: audience_range_topic_contacts
AND ct.contact_id BETWEEN :lo::bigint AND :hi::bigint

-- name: audience_range_contacts
AND c.id BETWEEN :lo::bigint AND :hi::bigint

-- name: contact_id_bounds
SELECT coalesce(min(id), 0) AS lo, coalesce(max(id), 0) AS hi FROM contacts

-- name: audience_session_settings
-- JIT compilation costs more than it saves on these plans; the hash tables
-- of a one-pass audience (contacts, topic preferences) need ~100 MB at 1 M
-- contacts, which work_mem × hash_mem_multiplier covers without spilling.
SELECT set_config('jit', 'off', true), set_config('work_mem', '64MB', true)

-- name: audience_part_settings
-- An audience split over several connections has its parallelism already:
-- parallel workers under each part would only take the cores from the other
-- parts (measured at 1 M contacts, 2 parts on 2 cores: 6.1 s with, 5.1 s without).
SELECT set_config('max_parallel_workers_per_gather', '0', true)

-- name: campaign_lock
-- Serialises launches of one campaign (two terminals, two workers).
SELECT c.id, c.topic_id, t.default_subscribed, c.channel, c.policy, c.segment,
       c.active_within_months, c.status, c.kind,
       coalesce((c.definition->>'repermission_window_days')::integer, 60) AS repermission_window_days
FROM campaigns c JOIN topics t ON t.id = c.topic_id
WHERE c.id = $1
FOR UPDATE OF c

-- name: campaign_spec
SELECT c.id, c.slug, c.topic_id, t.slug AS topic_slug, t.default_subscribed, c.channel, c.policy,
       c.segment, c.active_within_months, c.status, c.audience_at, c.audience_counts
FROM campaigns c JOIN topics t ON t.id = c.topic_id
WHERE c.slug = $1

-- name: audience_count_wrapper
SELECT coalesce(reason, 'eligible') AS reason, count(*) AS contacts
FROM (:audience) AS audience GROUP BY 1 ORDER BY 1

-- name: audience_result_create
-- Computed once per launch, then both frozen and counted.
CREATE TEMPORARY TABLE audience_result ON COMMIT DROP AS :audience

-- name: audience_repermission_filter
-- A re-permission request is itself a commercial message (CASL s.1(2)): it may
-- only go to someone whose implied consent is still valid now ($1) and lapses
-- within the window ($2 days). Express holders have nothing to give; already
-- lapsed contacts stay `consent_expired`; the rest are counted `not_lapsing`.
UPDATE audience_result SET reason = 'not_lapsing'
WHERE reason IS NULL
  AND NOT coalesce(consent_kind <> 'express'
                   AND consent_valid_until < $1::timestamptz + make_interval(days => $2::integer),
                   false)

-- name: audience_freeze
-- One delivery per eligible contact, with the consent that justified it as
-- it stood at freeze time. Re-launching never adds a duplicate: the rows
-- already frozen are skipped here, and the unique (contact, campaign) key
-- stands behind it. Not ON CONFLICT: its speculative insertion writes one
-- more WAL record per row and took the insert from 5.6 to 8.0 s at 714 k
-- rows. Only the launch inserts deliveries, under the campaign's lock, so no
-- other transaction can add this campaign's rows between check and insert.
INSERT INTO deliveries (campaign_id, contact_id, domain, consent_id, consent_kind, consent_source,
                        consent_obtained_at)
SELECT $1, a.contact_id, a.domain, a.consent_id, a.consent_kind, a.consent_source,
       a.consent_obtained_at
FROM audience_result a
WHERE a.reason IS NULL
  AND NOT EXISTS (SELECT FROM deliveries d WHERE d.contact_id = a.contact_id AND d.campaign_id = $1)
ORDER BY a.contact_id

-- name: audience_result_counts
SELECT coalesce(reason, 'eligible') AS reason, count(*) AS contacts
FROM audience_result GROUP BY 1 ORDER BY 1

-- name: audience_record
UPDATE campaigns SET audience_at = $2, audience_counts = $3, updated_at = now() WHERE id = $1

-- name: campaign_insert_minimal
-- A campaign row with only the columns the audience needs, no template:
-- what tests and benchmarks of the audience, reports and hygiene build on.
INSERT INTO campaigns (slug, name, topic_id, channel, policy, segment, active_within_months,
                       definition)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING id

-- name: contact_rule_inputs
-- Everything consent.evaluate needs about one contact (contacts explain).
SELECT c.id, c.email, c.name, c.locale, c.attributes, c.last_activity_at, c.erased_at,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                    'id', l.id, 'channel', l.channel, 'action', l.action, 'kind', l.kind,
                    'source', l.source, 'obtained_at', l.obtained_at, 'ends_at', l.ends_at,
                    'topic_id', l.topic_id) ORDER BY l.obtained_at, l.id)
                 FROM consents l WHERE l.contact_id = c.id), '[]') AS ledger,
       coalesce((SELECT jsonb_object_agg(ch.channel, ch.enabled)
                 FROM contact_channels ch WHERE ch.contact_id = c.id), '{}') AS channels,
       coalesce((SELECT jsonb_object_agg(ct.topic_id::text, ct.subscribed)
                 FROM contact_topics ct WHERE ct.contact_id = c.id), '{}') AS topics,
       coalesce((SELECT array_agg(t.slug) FROM contact_topics ct JOIN topics t ON t.id = ct.topic_id
                 WHERE ct.contact_id = c.id AND ct.subscribed), '{}') AS topic_slugs,
       coalesce((SELECT jsonb_agg(jsonb_build_object('scope', s.scope, 'reason', s.reason,
                    'channel', s.channel, 'topic_id', s.topic_id))
                 FROM suppressions s WHERE s.email_hash = c.email_hash), '[]') AS suppressions
FROM contacts c WHERE c.email = $1

-- name: consents_expiring
-- Implied consents that lapse within the window: the re-permission list.
-- Same "latest grant per kind after the last withdrawal" rule as the
-- audience; contacts who also hold express consent do not need asking.
WITH standing AS (
    SELECT l.contact_id, (v.choice).*
    FROM consent_latest($1::text, $2::timestamptz) l
    CROSS JOIN LATERAL (VALUES
        (consent_choice('express', l.express[1], l.withdrawal[1], $2)),
        (consent_choice('implied_purchase', l.purchase[1], l.withdrawal[1], $2)),
        (consent_choice('implied_contract', l.contract[1], l.withdrawal[1], $2)),
        (consent_choice('implied_inquiry', l.inquiry[1], l.withdrawal[1], $2)),
        (consent_choice('implied_publication', l.publication[1], l.withdrawal[1], $2))
    ) AS v (choice)
    WHERE (v.choice).id IS NOT NULL
)
SELECT c.email, c.name, c.locale, k.kind, k.source, k.obtained_at, k.valid_until
FROM standing k JOIN contacts c ON c.id = k.contact_id
WHERE NOT k.express AND k.valid AND k.valid_until < $3::timestamptz
  AND c.erased_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM standing e WHERE e.contact_id = k.contact_id AND e.express)
ORDER BY k.valid_until, c.email

-- ---------------------------------------------------------------- send engine

-- name: running_campaigns
-- Campaigns a worker may claim from; scheduled ones whose time has come are
-- started by `start_due_campaigns` first.
SELECT id FROM campaigns WHERE status = 'running' ORDER BY id

-- name: start_due_campaigns
UPDATE campaigns SET status = 'running', started_at = coalesce(started_at, now()), updated_at = now()
WHERE status = 'scheduled' AND scheduled_at <= now() AND audience_at IS NOT NULL
RETURNING id, slug

-- name: claim_batch
-- FOR UPDATE SKIP LOCKED: concurrent workers take disjoint rows without
-- waiting on each other. The campaign must still be running at claim time,
-- which is how pause and cancel take effect within one batch. The lease is
-- renewed while the worker lives; a row found `sending` with an expired
-- lease was in flight during a crash and becomes `uncertain`, never resent
-- on its own (the guarantee listmonk and Mautic break).
WITH picked AS (
    SELECT d.id
    FROM deliveries d
    WHERE d.campaign_id = $1 AND d.status IN ('queued', 'deferred') AND d.next_attempt_at <= now()
      AND EXISTS (SELECT 1 FROM campaigns c WHERE c.id = $1 AND c.status = 'running')
    ORDER BY d.next_attempt_at, d.id
    LIMIT $2
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE deliveries d
SET status = 'sending', lease_until = now() + make_interval(secs => $3), worker = $4,
    attempts = d.attempts + 1, first_attempt_at = coalesce(d.first_attempt_at, now()),
    updated_at = now()
FROM picked, contacts c
WHERE d.id = picked.id AND c.id = d.contact_id
RETURNING d.id, d.campaign_id, d.contact_id, d.domain, d.attempts, d.first_attempt_at,
          d.consent_kind, d.consent_source, d.consent_obtained_at,
          c.email, c.name, c.locale, c.attributes, c.tracking

-- name: renew_leases
UPDATE deliveries SET lease_until = now() + make_interval(secs => $2)
WHERE worker = $1 AND status = 'sending'

-- name: release_batch
-- Graceful shutdown: rows claimed but never handed to SMTP go back to the
-- queue — or, if their campaign was cancelled meanwhile, to their final state.
UPDATE deliveries d
SET status = CASE WHEN c.status = 'cancelled' THEN 'skipped'
                  WHEN d.attempts > 1 THEN 'deferred' ELSE 'queued' END,
    skip_reason = CASE WHEN c.status = 'cancelled' THEN 'cancelled' ELSE d.skip_reason END,
    attempts = d.attempts - 1, lease_until = NULL, worker = NULL, updated_at = now()
FROM campaigns c
WHERE d.id = ANY($1::bigint[]) AND d.status = 'sending' AND d.worker = $2
  AND c.id = d.campaign_id

-- name: record_outcomes
-- One statement per batch of outcomes, for rows this worker holds. A row
-- swept to `uncertain` because this worker's lease lapsed (it was slow, not
-- dead) still takes the outcome the worker knows: known beats uncertain. A
-- deferral in a campaign cancelled meanwhile becomes its final `skipped`.
-- Returns the rows written, so the archive and suppressions follow exactly them.
UPDATE deliveries d
SET status = CASE WHEN o.status = 'deferred' AND c.status = 'cancelled' THEN 'skipped'
                  ELSE o.status END,
    smtp_code = o.code, smtp_reply = o.reply, message_id = o.message_id,
    sent_at = CASE WHEN o.status = 'sent' THEN o.at END,
    next_attempt_at = coalesce(o.retry_at, d.next_attempt_at),
    skip_reason = CASE WHEN o.status = 'deferred' AND c.status = 'cancelled' THEN 'cancelled'
                       ELSE o.skip_reason END,
    lease_until = NULL, worker = NULL, updated_at = now()
FROM unnest($1::bigint[], $2::text[], $3::integer[], $4::text[], $5::text[], $6::timestamptz[],
            $7::timestamptz[], $8::text[])
     AS o (id, status, code, reply, message_id, at, retry_at, skip_reason),
     campaigns c
WHERE d.id = o.id AND d.status IN ('sending', 'uncertain') AND d.worker = $9
  AND c.id = d.campaign_id
RETURNING d.id

-- name: archive_insert
INSERT INTO archive (delivery_id, template_version_id, render_inputs, sha256, size_bytes)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::jsonb[], $4::bytea[], $5::integer[])
ON CONFLICT (delivery_id) DO NOTHING

-- name: suppress_hard_bounces
-- A hard bounce (5.1.x, 5.2.1) means the address is dead: suppress it on the
-- channel for every future campaign.
INSERT INTO suppressions (email_hash, scope, channel, reason, source, detail)
SELECT c.email_hash, 'channel', 'email', 'hard_bounce', 'smtp', jsonb_build_object('delivery_id', d.id)
FROM deliveries d JOIN contacts c ON c.id = d.contact_id
WHERE d.id = ANY($1::bigint[]) AND c.email_hash IS NOT NULL
ON CONFLICT DO NOTHING

-- name: sweep_uncertain
-- Rows left `sending` by a dead worker: reported as uncertain, not resent.
UPDATE deliveries SET status = 'uncertain', lease_until = NULL, updated_at = now()
WHERE status = 'sending' AND lease_until < now()
RETURNING campaign_id

-- name: finish_campaigns
-- A running campaign with nothing left to send or retry is done.
UPDATE campaigns c SET status = 'done', finished_at = now(), updated_at = now()
WHERE c.status = 'running'
  -- Two questions, one per index (migration 0006): rows still to send or retry,
  -- and rows in flight.
  AND NOT EXISTS (SELECT 1 FROM deliveries d
                  WHERE d.campaign_id = c.id AND d.status IN ('queued', 'deferred'))
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.campaign_id = c.id AND d.status = 'sending')
RETURNING c.id, c.slug

-- name: throttle_take
-- $2 is the rate the caller is allowed now (configured rate x the share
-- mailer.aimd computes from factor and since_cut_s, which come back with the grant).
SELECT granted, wait_s, factor, since_cut_s FROM throttle_take($1, $2, $3, $4)

-- name: throttle_cut_ensure
-- A domain can be cut before anything was taken from its bucket.
INSERT INTO throttle_buckets (key, tokens, refreshed_at) VALUES ($1, 0, clock_timestamp())
ON CONFLICT (key) DO NOTHING

-- name: throttle_cut_state
-- Locked until the cut is written: workers seeing the same burst of 421s at
-- once take turns, and all but the first find a cut too recent to repeat.
SELECT factor, extract(epoch FROM clock_timestamp() - penalised_at) AS since_cut_s
FROM throttle_buckets WHERE key = $1 FOR UPDATE

-- name: throttle_cut
-- The bucket is emptied too: tokens granted at the old rate must not keep flowing.
UPDATE throttle_buckets SET factor = $2, penalised_at = clock_timestamp(), tokens = 0
WHERE key = $1

-- name: throttle_record_wait
UPDATE throttle_buckets SET waited_s = waited_s + $2 WHERE key = $1

-- name: warmup_take
SELECT warmup_take($1, $2, $3)

-- name: warmup_first_day
SELECT min(day) FROM send_days WHERE sent > 0

-- name: campaign_status_counts
-- Every delivery of the campaign by state. Queued and deferred rows are
-- counted through deliveries_claimable_idx, the others through
-- deliveries_campaign_status_idx (migration 0006): each index holds only its
-- states, so the question is asked of each.
SELECT status, count(*) AS n FROM deliveries
WHERE campaign_id = $1 AND status IN ('queued', 'deferred') GROUP BY status
UNION ALL
SELECT status, count(*) AS n FROM deliveries
WHERE campaign_id = $1 AND status NOT IN ('queued', 'deferred') GROUP BY status

-- name: campaign_set_status
-- Transitions are checked in Python (lifecycle.py) and again here: the
-- update only happens from the expected state.
UPDATE campaigns SET status = $3, updated_at = now(),
       started_at = CASE WHEN $3 = 'running' THEN coalesce(started_at, now()) ELSE started_at END,
       finished_at = CASE WHEN $3 IN ('done', 'cancelled') THEN now() ELSE finished_at END
WHERE id = $1 AND status = ANY($2::text[])
RETURNING status

-- name: cancel_remaining
-- Cancelling gives every row not yet sent a final state.
UPDATE deliveries SET status = 'skipped', skip_reason = 'cancelled', lease_until = NULL,
       updated_at = now()
WHERE campaign_id = $1 AND status IN ('queued', 'deferred')

-- name: resend_uncertain
-- Only by explicit operator decision: uncertain rows go back to the queue
-- (the campaign is set running again in the same transaction).
UPDATE deliveries SET status = 'queued', next_attempt_at = now(), worker = NULL,
       updated_at = now()
WHERE campaign_id = $1 AND status = 'uncertain'

-- name: campaign_reopen
-- A done campaign with rows queued again (resend-uncertain) runs again.
UPDATE campaigns SET status = 'running', finished_at = NULL, updated_at = now()
WHERE id = $1 AND status = 'done'

-- ---------------------------------------------------------------- campaigns and templates

-- name: template_version_upsert
-- Template versions are immutable: the same files give the same row; a
-- changed file makes a new version (messages already archived keep theirs).
WITH inserted AS (
    INSERT INTO template_versions (name, sha256, files) VALUES ($1, $2, $3)
    ON CONFLICT (name, sha256) DO NOTHING
    RETURNING id
)
SELECT id FROM inserted
UNION ALL
SELECT id FROM template_versions WHERE name = $1 AND sha256 = $2
LIMIT 1

-- name: campaign_create
INSERT INTO campaigns (slug, name, kind, topic_id, channel, policy, segment, active_within_months,
                       definition, template_version_id, scheduled_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
RETURNING id

-- name: campaign_by_slug
SELECT c.id, c.slug, c.status, c.definition, c.template_version_id, c.scheduled_at,
       c.audience_at, c.audience_counts, c.started_at, c.finished_at, t.slug AS topic_slug
FROM campaigns c JOIN topics t ON t.id = c.topic_id
WHERE c.slug = $1

-- name: campaign_for_engine
SELECT c.id, c.slug, c.status, c.definition, c.template_version_id, tv.files, tv.name AS template
FROM campaigns c JOIN template_versions tv ON tv.id = c.template_version_id
WHERE c.id = $1

-- name: campaign_links
SELECT url, id FROM links WHERE campaign_id = $1

-- name: links_register
-- Links are registered per campaign; the click token carries the id, and the
-- tracker redirects only to a registered URL (never one from the request).
WITH inserted AS (
    INSERT INTO links (campaign_id, url) SELECT $1, unnest($2::text[])
    ON CONFLICT (campaign_id, url) DO NOTHING
    RETURNING url, id
)
SELECT url, id FROM inserted
UNION ALL
SELECT url, id FROM links WHERE campaign_id = $1 AND url = ANY($2::text[])

-- name: campaigns_list
SELECT c.slug, c.name, c.status, t.slug AS topic, c.created_at, c.started_at, c.finished_at,
       (SELECT count(*) FROM deliveries d
        WHERE d.campaign_id = c.id AND d.status IN ('queued', 'deferred'))
       + (SELECT count(*) FROM deliveries d
          WHERE d.campaign_id = c.id AND d.status NOT IN ('queued', 'deferred')) AS deliveries
FROM campaigns c JOIN topics t ON t.id = c.topic_id
ORDER BY c.created_at DESC

-- ---------------------------------------------------------------- archive

-- name: archive_by_delivery
SELECT a.delivery_id, a.render_inputs, a.sha256, a.size_bytes, a.created_at,
       tv.name AS template, tv.files, d.campaign_id, d.status, d.sent_at, d.message_id
FROM archive a
JOIN template_versions tv ON tv.id = a.template_version_id
JOIN deliveries d ON d.id = a.delivery_id
WHERE a.delivery_id = $1

-- name: archive_for_campaign
-- Every sent message of a campaign with the consent that justified it, as
-- frozen on the delivery, and the ledger row's evidence (what an auditor
-- asks: "show me the consent and the message").
SELECT a.delivery_id, a.render_inputs, a.sha256, tv.name AS template, tv.files,
       d.sent_at, d.message_id, d.consent_kind, d.consent_source, d.consent_obtained_at,
       l.evidence AS consent_evidence, c.email
FROM deliveries d
JOIN archive a ON a.delivery_id = d.id
JOIN template_versions tv ON tv.id = a.template_version_id
JOIN contacts c ON c.id = d.contact_id
LEFT JOIN consents l ON l.id = d.consent_id
WHERE d.campaign_id = $1
  -- Every state, asked of the index that holds it (migration 0006: rows
  -- still to send in the claimable index, the others in the status index);
  -- without it no index covers a whole campaign and deliveries is read whole.
  AND (d.status IN ('queued', 'deferred') OR d.status NOT IN ('queued', 'deferred'))
ORDER BY d.id
