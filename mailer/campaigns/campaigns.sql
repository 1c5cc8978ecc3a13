-- Campaigns: the audience (one set-based pass, with a reason per exclusion), its
-- freeze into deliveries, the campaign lifecycle, templates, re-permission lists.
-- Run by mailer/campaigns/store.py.

-- name: audience
-- The eligibility rules of mailer/core/eligibility.py, set-based, in one pass over the
-- contacts: every contact gets the FIRST failing reason in Reason order, or
-- NULL (eligible) with the ledger row that justifies sending. A property
-- test proves this and eligibility.evaluate agree on random ledgers.
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
    WHERE s.channel = $3 AND s.newest_at > $5
      -- Implied by newest_at > $5 (a row dated after T was dated ahead of its
      -- writing, or written after T), and what the indexes answer: usually
      -- nobody, found without a scan (see consent_current_ahead_idx).
      AND (s.newest_at > s.written_at OR s.written_at > $5) /*current_contacts*/
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

-- name: campaign_status_counts
-- Every delivery of the campaign by state. Queued and deferred rows are
-- counted through deliveries_claimable_idx (it carries their state: index-only), the others through
-- deliveries_campaign_status_idx (migration 0006): each index holds only its
-- states, so the question is asked of each.
SELECT status, count(*) AS n FROM deliveries
WHERE campaign_id = $1 AND status IN ('queued', 'deferred') GROUP BY status
UNION ALL
SELECT status, count(*) AS n FROM deliveries
WHERE campaign_id = $1 AND status NOT IN ('queued', 'deferred') GROUP BY status

-- name: campaign_unbuilt
-- The first messages of the campaign that could not be built for their
-- contact (a template error on that contact's data, a render limit, over the
-- relay's size): the engine skips them with the error as their reply. Read
-- through deliveries_campaign_status_idx (skipped rows only).
SELECT c.email, d.skip_reason, d.smtp_reply
FROM deliveries d LEFT JOIN contacts c ON c.id = d.contact_id
WHERE d.campaign_id = $1 AND d.status = 'skipped' AND d.smtp_reply IS NOT NULL
ORDER BY d.id
LIMIT $2

-- name: campaign_set_status
-- Transitions are checked in Python (lifecycle.py) and again here: the
-- update only happens from the expected state. An operator's transition
-- (resume above all) clears the reputation guard's pause reason.
UPDATE campaigns SET status = $3, updated_at = now(), pause_reason = NULL,
       started_at = CASE WHEN $3 = 'running' THEN coalesce(started_at, now()) ELSE started_at END,
       finished_at = CASE WHEN $3 IN ('done', 'cancelled') THEN now() ELSE finished_at END
WHERE id = $1 AND status = ANY($2::text[])
RETURNING status

-- name: campaign_pause_for_reputation
-- The reputation guard (mailer/inbound/guard.py) pauses a running campaign and
-- says why; its window restarts here, so after the operator resumes, the
-- campaign is judged on what it sends from then on.
UPDATE campaigns SET status = 'paused', pause_reason = $2, guard_reset_at = now(),
       updated_at = now()
WHERE id = $1 AND status = 'running'
RETURNING id

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

-- name: template_version_find
-- After template_version_upsert found nothing: the same files were inserted at
-- that moment by another transaction, which ON CONFLICT waited for; its row is
-- visible to a new statement, not to the one whose snapshot predates the commit.
SELECT id FROM template_versions WHERE name = $1 AND sha256 = $2

-- name: campaign_create
-- No row when the slug is taken: two creates of one slug at once (the API, the
-- console) both pass the caller's look-up, and the second must be told so, not fail.
INSERT INTO campaigns (slug, name, kind, topic_id, channel, policy, segment, active_within_months,
                       definition, template_version_id, scheduled_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (slug) DO NOTHING
RETURNING id

-- name: campaign_by_slug
SELECT c.id, c.slug, c.status, c.definition, c.template_version_id, c.scheduled_at,
       c.audience_at, c.audience_counts, c.started_at, c.finished_at, t.slug AS topic_slug,
       c.pause_reason
FROM campaigns c JOIN topics t ON t.id = c.topic_id
WHERE c.slug = $1

-- name: campaigns_list
SELECT c.slug, c.name, c.status, t.slug AS topic, c.created_at, c.started_at, c.finished_at,
       (SELECT count(*) FROM deliveries d
        WHERE d.campaign_id = c.id AND d.status IN ('queued', 'deferred'))
       + (SELECT count(*) FROM deliveries d
          WHERE d.campaign_id = c.id AND d.status NOT IN ('queued', 'deferred')) AS deliveries
FROM campaigns c JOIN topics t ON t.id = c.topic_id
ORDER BY c.created_at DESC

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
SELECT c.email, c.name, c.locale, k.kind, k.source, k.obtained_at, k.valid_until,
       l.obtained_date_only, l.ends_date_only
FROM standing k JOIN contacts c ON c.id = k.contact_id
JOIN consents l ON l.id = k.id  -- how its dates print (0007); only the rows listed
WHERE NOT k.express AND k.valid AND k.valid_until < $3::timestamptz
  AND c.erased_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM standing e WHERE e.contact_id = k.contact_id AND e.express)
ORDER BY k.valid_until, c.email

-- name: topic_ids
-- The topics a campaign file may name (campaign create checks its `topic`).
SELECT slug, id FROM topics ORDER BY slug

-- name: campaign_templates
-- The immutable template version a campaign renders (lint and preview).
SELECT tv.name, tv.files
FROM campaigns c JOIN template_versions tv ON tv.id = c.template_version_id
WHERE c.id = $1

-- name: campaigns_overview
-- The console's dashboard and campaign list in one statement: each campaign with its
-- deliveries by state (asked of each state's index, as campaign_status_counts does) and
-- the reputation guard's pause reason. Active ones first; $1 caps the finished ones shown.
-- $2 false: a finished campaign's counts hold only its uncertain deliveries (the
-- dashboard's alert): counting a finished 600,000-delivery campaign on every dashboard
-- view cost 140 ms (bench/README.md "Console"), the uncertain ones are a short index range.
SELECT c.id, c.slug, c.name, c.status, t.slug AS topic, c.created_at, c.started_at,
       c.finished_at, c.scheduled_at, c.pause_reason,
       CASE WHEN $2 OR c.status NOT IN ('done', 'cancelled') THEN
       coalesce((SELECT jsonb_object_agg(s.status, s.n) FROM (
           SELECT status, count(*) AS n FROM deliveries d
           WHERE d.campaign_id = c.id AND d.status IN ('queued', 'deferred') GROUP BY status
           UNION ALL
           SELECT status, count(*) AS n FROM deliveries d
           WHERE d.campaign_id = c.id AND d.status NOT IN ('queued', 'deferred')
           GROUP BY status) s), '{}')
       ELSE
       coalesce((SELECT jsonb_build_object('uncertain', count(*)) FROM deliveries d
                 WHERE d.campaign_id = c.id AND d.status = 'uncertain'
                 HAVING count(*) > 0), '{}')
       END AS counts
FROM campaigns c JOIN topics t ON t.id = c.topic_id
WHERE c.status IN ('draft', 'scheduled', 'running', 'paused')
   OR c.id IN (SELECT id FROM campaigns WHERE status IN ('done', 'cancelled')
               ORDER BY created_at DESC LIMIT $1)
ORDER BY c.status IN ('running', 'paused', 'scheduled') DESC, c.created_at DESC

-- name: audience_breakdown_wrapper
-- Counts by reason AND the first $N contacts of each reason (by id), from one pass over
-- the audience: the console shows why people are out and lets the operator open one.
-- The sample's addresses are joined only for those few rows.
WITH a AS MATERIALIZED (
    SELECT coalesce(reason, 'eligible') AS reason, contact_id,
           row_number() OVER (PARTITION BY reason ORDER BY contact_id) AS rn
    FROM (:audience) AS audience
)
SELECT r.reason, r.contacts,
       coalesce((SELECT array_agg(c.email ORDER BY a.rn) FROM a JOIN contacts c ON c.id = a.contact_id
                 WHERE a.reason = r.reason AND a.rn <= :sample AND c.email IS NOT NULL), '{}')
           AS sample
FROM (SELECT reason, count(*) AS contacts FROM a GROUP BY reason) r
ORDER BY r.reason
