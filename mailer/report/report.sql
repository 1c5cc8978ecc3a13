-- The campaign report's statements (`mailer campaign report`), run by
-- ReportStore.campaign_report_rows (mailer/report/store.py). Events are read through the report_* rollups of
-- migration 0002: each event is folded once, from a per-campaign mark, so a
-- report costs about the events written since the last one, not the
-- campaign's (bench/report.py: figures in bench/README.md, "Report").

-- ---------------------------------------------------------------- fold

-- name: report_session_settings
-- A first fold of a big campaign groups millions of events. Hashed in
-- memory, 10 M events took 18-28 s; the planner, which overestimates the
-- groups 4x, otherwise sorts them on disk (62 s). Hash tables take what they
-- need (~0.7 GB for 10 M events; a few MB for the usual few thousand) and
-- spill beyond 2 GB. Custom plans always: a generic plan cannot know that a
-- window is a handful of rows on most calls and a whole campaign on the first.
SELECT set_config('work_mem', '512MB', true),
       set_config('hash_mem_multiplier', '4', true),
       set_config('plan_cache_mode', 'force_custom_plan', true)

-- name: report_mark_create
INSERT INTO report_marks (campaign_id) VALUES ($1) ON CONFLICT (campaign_id) DO NOTHING

-- name: report_mark_lock
-- Held until the report's transaction ends: two folds of one campaign at
-- once would count the same window twice.
SELECT xact FROM report_marks WHERE campaign_id = $1 FOR UPDATE

-- name: report_horizon
-- Every transaction below this id has committed or aborted: its events are
-- final and can be folded (see migration 0002 for why not occurred_at).
SELECT pg_snapshot_xmin(pg_current_snapshot())

-- name: report_fold
-- Folds this campaign's events of transactions in [$2, $3) ($3 NULL: all
-- from $2 on) into the rollups; returns how many events it read. One pass
-- over the events (GROUPING SETS); the small aggregate then feeds every
-- rollup. grouped_out is the GROUPING() bit mask over (link_id,
-- delivery_id, hour), a set bit meaning "not in this set":
--   5 = (kind, delivery_id)           one key per delivery and kind
--   1 = (kind, link_id, delivery_id)  one key per delivery and link
--   3 = (kind, link_id)               events per link
--   6 = (kind, hour)                  events per hour, and per kind
-- Each key is looked up once in report_firsts (one index probe: the cost of
-- a fold is about one probe per delivery-and-link in the window). The
-- caller holds the campaign's mark lock, so nothing else writes these keys
-- meanwhile: the plain INSERT cannot conflict, and would fail loudly if it did.
WITH agg AS MATERIALIZED (
    -- Grouped on a boolean, not the kind's text: narrower keys, smaller
    -- hash tables (see report_session_settings).
    SELECT CASE WHEN click THEN 'click' ELSE 'open' END AS kind, link_id, delivery_id, hour,
           grouped_out, human, machine
    FROM (SELECT click, link_id, delivery_id, hour,
                 GROUPING(link_id, delivery_id, hour) AS grouped_out,
                 count(*) FILTER (WHERE NOT machine) AS human,
                 count(*) FILTER (WHERE machine) AS machine
          FROM (SELECT e.kind = 'click' AS click, coalesce(e.link_id, 0) AS link_id,
                       e.delivery_id, e.machine, date_trunc('hour', e.occurred_at, 'UTC') AS hour
                FROM events e
                WHERE e.campaign_id = $1 AND e.xact >= $2::xid8
                  AND ($3::xid8 IS NULL OR e.xact < $3::xid8)) AS e
          GROUP BY GROUPING SETS ((click, delivery_id), (click, link_id, delivery_id),
                                  (click, link_id), (click, hour))) AS g
), keys AS MATERIALIZED (
    -- seen: NULL never before, false by machines only, true by a person.
    SELECT a.delivery_id, a.kind, a.link_id, a.human, f.human AS seen
    FROM (SELECT delivery_id, kind, CASE WHEN grouped_out = 5 THEN 0 ELSE link_id END AS link_id,
                 human > 0 AS human
          FROM agg
          WHERE grouped_out = 5 OR (grouped_out = 1 AND link_id <> 0)) AS a
    LEFT JOIN report_firsts f
           ON f.delivery_id = a.delivery_id AND f.kind = a.kind AND f.link_id = a.link_id
), fresh AS (
    INSERT INTO report_firsts (delivery_id, kind, link_id, human)
    SELECT delivery_id, kind, link_id, human FROM keys WHERE seen IS NULL
), promoted AS (
    -- Seen before by machines only (a mail privacy proxy, a link scanner),
    -- now by a person.
    UPDATE report_firsts f SET human = true
    FROM keys k
    WHERE NOT k.seen AND k.human
      AND f.delivery_id = k.delivery_id AND f.kind = k.kind AND f.link_id = k.link_id
), deltas (kind, link_id, human_events, machine_events, unique_all, unique_human) AS (
    SELECT kind, 0::bigint, sum(human), sum(machine), 0, 0 FROM agg WHERE grouped_out = 6
    GROUP BY kind
    UNION ALL
    SELECT kind, link_id, human, machine, 0, 0 FROM agg WHERE grouped_out = 3 AND link_id <> 0
    UNION ALL
    SELECT kind, link_id, 0, 0, count(*) FILTER (WHERE seen IS NULL),
           count(*) FILTER (WHERE human AND seen IS NOT TRUE)
    FROM keys GROUP BY kind, link_id
), totals AS (
    INSERT INTO report_totals AS t
        (campaign_id, kind, link_id, human_events, machine_events, unique_all, unique_human)
    SELECT $1, kind, link_id, sum(human_events), sum(machine_events), sum(unique_all),
           sum(unique_human)
    FROM deltas GROUP BY kind, link_id
    ON CONFLICT (campaign_id, kind, link_id) DO UPDATE
        SET human_events = t.human_events + EXCLUDED.human_events,
            machine_events = t.machine_events + EXCLUDED.machine_events,
            unique_all = t.unique_all + EXCLUDED.unique_all,
            unique_human = t.unique_human + EXCLUDED.unique_human
), hourly AS (
    INSERT INTO report_hourly AS h (campaign_id, kind, hour, human_events, machine_events)
    SELECT $1, kind, hour, human, machine FROM agg WHERE grouped_out = 6
    ON CONFLICT (campaign_id, kind, hour) DO UPDATE
        SET human_events = h.human_events + EXCLUDED.human_events,
            machine_events = h.machine_events + EXCLUDED.machine_events
)
SELECT coalesce(sum(human + machine), 0)::bigint AS events FROM agg WHERE grouped_out = 6

-- name: report_mark_advance
UPDATE report_marks SET xact = $2, events = events + $3, refreshed_at = now()
WHERE campaign_id = $1

-- ---------------------------------------------------------------- figures

-- name: report_campaign
-- now() is the report's time: the transaction's, like every figure read with it.
SELECT c.id, c.slug, c.name, c.status, t.slug AS topic, c.audience_at, c.audience_counts,
       c.started_at, c.finished_at, now() AS generated_at, c.pause_reason
FROM campaigns c JOIN topics t ON t.id = c.topic_id
WHERE c.id = $1

-- name: report_outcome_details
-- Why rows did not go: skip reasons, and SMTP codes of bounces, failures and
-- deferrals. Only those rows are read: deferred ones through the claimable
-- index, the others through the status index (migration 0006).
-- A bounce reported after the relay accepted the message (a DSN, an ESP
-- webhook) shows its RFC 3463 status, from the bounces table (migration 0009).
SELECT status,
       coalesce(skip_reason,
                CASE WHEN status = 'bounced' THEN
                    (SELECT 'DSN ' || coalesce(b.status, '5.0.0') FROM bounces b
                     WHERE b.delivery_id = d.id AND b.hard ORDER BY b.id LIMIT 1) END,
                'SMTP ' || smtp_code, 'unknown') AS detail,
       count(*) AS n
FROM deliveries d
WHERE campaign_id = $1 AND (status IN ('skipped', 'bounced', 'failed') OR status = 'deferred')
GROUP BY 1, 2
ORDER BY 1, 3 DESC, 2

-- name: report_event_totals
SELECT kind, link_id, human_events, machine_events, unique_all, unique_human
FROM report_totals WHERE campaign_id = $1

-- name: report_event_hours
SELECT kind, hour, human_events, machine_events
FROM report_hourly WHERE campaign_id = $1 ORDER BY hour, kind

-- name: report_links
SELECT id, url FROM links WHERE campaign_id = $1 ORDER BY id

-- name: report_unsubscribes
-- Opt-outs made from this campaign's messages: the tracker's withdraw rows
-- carry the delivery and campaign in their evidence (consents_optout_campaign_idx).
-- A person counts once per line however many rows their choice wrote (an
-- opt-out of every digital channel writes one per channel). grouped_out is
-- the GROUPING() mask over (scope, method, reason): 7 is everyone, 3 by
-- scope, 5 by method, 6 by reason.
SELECT GROUPING(scope, method, reason) AS grouped_out, scope, method, reason,
       count(DISTINCT contact_id) AS people
FROM (SELECT l.contact_id,
             CASE WHEN l.topic_id IS NULL THEN l.channel ELSE 'topic' END AS scope,
             coalesce(l.evidence ->> 'method', l.source) AS method,
             nullif(l.evidence ->> 'reason', '') AS reason
      FROM consents l
      WHERE l.action = 'withdraw' AND l.evidence ->> 'campaign_id' = $1::bigint::text) AS u
GROUP BY GROUPING SETS ((), (scope), (method), (reason))

-- name: report_complaints
-- Spam complaints (ARF) about this campaign's messages: a complaint
-- suppression names its delivery or campaign in `detail`. The CASE guards
-- the cast: detail is free-form jsonb.
SELECT count(DISTINCT s.email_hash)
FROM suppressions s
LEFT JOIN deliveries d
       ON d.id = CASE WHEN s.detail ->> 'delivery_id' ~ '^[0-9]{1,18}$'
                      THEN (s.detail ->> 'delivery_id')::bigint END
WHERE s.reason = 'complaint'
  AND (d.campaign_id = $1 OR s.detail ->> 'campaign_id' = $1::bigint::text)

-- name: report_soft_bounces
-- Deliveries that soft-bounced (4.x.x DSN) after the relay took them: still
-- `sent`, counted toward the address's soft-bounce rule (inbound.soft_bounce_*).
SELECT count(DISTINCT delivery_id) FROM bounces WHERE campaign_id = $1 AND NOT hard

-- name: report_outcomes
-- Deliveries by state, read in the report's own transaction (same plan as
-- campaign_status_counts in campaigns.sql: each index holds only its states).
SELECT status, count(*) AS n FROM deliveries
WHERE campaign_id = $1 AND status IN ('queued', 'deferred') GROUP BY status
UNION ALL
SELECT status, count(*) AS n FROM deliveries
WHERE campaign_id = $1 AND status NOT IN ('queued', 'deferred') GROUP BY status

-- ---------------------------------------------------------------- recent

-- name: recent_activity
-- The console dashboard's "last 24 hours" since $1: opt-outs (withdrawals in the ledger),
-- bounces by type, complaints. Each read through a time index (console migration).
SELECT (SELECT count(*) FROM consents WHERE action = 'withdraw' AND recorded_at >= $1) AS optouts,
       (SELECT count(*) FROM bounces WHERE occurred_at >= $1 AND hard) AS hard_bounces,
       (SELECT count(*) FROM bounces WHERE occurred_at >= $1 AND NOT hard) AS soft_bounces,
       (SELECT count(*) FROM complaints WHERE occurred_at >= $1) AS complaints

-- ---------------------------------------------------------------- one contact

-- name: contact_deliveries
-- A contact's deliveries, newest first: a keyset page below delivery id $2
-- (NULL: from the newest), $3 rows. deliveries_contact_idx finds the rows
-- (a person has a few per campaign sent, never the campaign's millions).
SELECT d.id, p.slug AS campaign, d.status, d.skip_reason, d.smtp_code, d.sent_at,
       d.updated_at
FROM deliveries d
JOIN campaigns p ON p.id = d.campaign_id
WHERE d.contact_id = $1 AND ($2::bigint IS NULL OR d.id < $2)
ORDER BY d.id DESC
LIMIT $3

-- name: contact_activity
-- What happened after a contact's messages went, newest first: opens and
-- clicks (events, through events_delivery_idx per delivery of the person),
-- opt-outs (withdraw rows of the ledger), bounces and complaints. A keyset
-- page below ($2 time, $3 kind, $4 reference, $6 tie) (NULL $2: from the
-- newest), $5 rows; the reference is the delivery for an open or click, else
-- the row's own id. events has no id of its own (partitioned, written by the
-- tracker's COPY), and one delivery may be opened twice in the same
-- microsecond: `tie` numbers the rows sharing (time, kind, reference), in an
-- order of their other columns, so no page skips or repeats one of them.
WITH mine AS MATERIALIZED (
    SELECT d.id, d.campaign_id FROM deliveries d WHERE d.contact_id = $1
)
SELECT t.at, t.kind, p.slug AS campaign, t.machine, t.detail, t.ref, t.tie
FROM (
    SELECT e.occurred_at AS at, e.kind, e.campaign_id, e.machine, l.url AS detail,
           e.delivery_id AS ref,
           row_number() OVER (PARTITION BY e.occurred_at, e.kind, e.delivery_id
                              ORDER BY e.link_id, e.machine, e.user_agent, e.ip_prefix) AS tie
    FROM mine m
    JOIN events e ON e.delivery_id = m.id
    LEFT JOIN links l ON l.id = e.link_id
    UNION ALL
    SELECT w.recorded_at, 'unsubscribe',
           CASE WHEN w.evidence ->> 'campaign_id' ~ '^[0-9]{1,18}$'
                THEN (w.evidence ->> 'campaign_id')::bigint END,
           false, coalesce('topic ' || tp.slug, w.channel), w.id, 1
    FROM consents w
    LEFT JOIN topics tp ON tp.id = w.topic_id
    WHERE w.contact_id = $1 AND w.action = 'withdraw'
    UNION ALL
    SELECT b.occurred_at, CASE WHEN b.hard THEN 'hard_bounce' ELSE 'soft_bounce' END,
           b.campaign_id, false, b.status, b.id, 1
    FROM bounces b WHERE b.contact_id = $1
    UNION ALL
    SELECT c.occurred_at, 'complaint', c.campaign_id, false, c.feedback_type, c.id, 1
    FROM mine m JOIN complaints c ON c.campaign_id = m.campaign_id AND c.delivery_id = m.id
) AS t
LEFT JOIN campaigns p ON p.id = t.campaign_id
WHERE $2::timestamptz IS NULL
   OR (t.at, t.kind, t.ref, t.tie) < ($2, $3::text, $4::bigint, $6::bigint)
ORDER BY t.at DESC, t.kind DESC, t.ref DESC, t.tie DESC
LIMIT $5

-- ---------------------------------------------------------------- across campaigns

-- name: across_campaigns
-- Campaigns started in [$1, $2), newest first, $3 at most (the console asks
-- one more to know the period holds more). Started: a draft has no figures.
SELECT c.id, c.slug, c.name, c.status, c.started_at
FROM campaigns c
WHERE c.started_at >= $1 AND c.started_at < $2
ORDER BY c.started_at DESC, c.id DESC
LIMIT $3

-- name: report_marks_create_many
-- report_mark_create for several campaigns at once.
INSERT INTO report_marks (campaign_id) SELECT unnest($1::bigint[])
ON CONFLICT (campaign_id) DO NOTHING

-- name: report_marks_lock_many
-- report_mark_lock for several campaigns, always in id order (two reports
-- locking overlapping sets in different orders would deadlock).
SELECT campaign_id, xact FROM report_marks WHERE campaign_id = ANY($1::bigint[])
ORDER BY campaign_id FOR UPDATE

-- name: report_marks_advance_many
-- report_mark_advance for several campaigns: each to horizon $2, plus the
-- events its fold read ($3, in the order of $1).
UPDATE report_marks m SET xact = $2, events = m.events + f.n, refreshed_at = now()
FROM unnest($1::bigint[], $3::bigint[]) AS f (id, n)
WHERE m.campaign_id = f.id

-- name: across_figures
-- The campaign report's figures for each campaign of $1, once their events
-- are folded (the rollups of report_event_totals, link 0 being the
-- campaign's opens and clicks); the other columns are report_outcomes,
-- report_soft_bounces, report_unsubscribes (by scope) and
-- report_complaints, asked of a set of campaigns: the same indexes, one
-- probe per campaign.
SELECT c.id,
       coalesce(o.human_events, 0) AS opens_human_events,
       coalesce(o.machine_events, 0) AS opens_machine_events,
       coalesce(o.unique_all, 0) AS opens_unique_all,
       coalesce(o.unique_human, 0) AS opens_unique_human,
       coalesce(k.human_events, 0) AS clicks_human_events,
       coalesce(k.machine_events, 0) AS clicks_machine_events,
       coalesce(k.unique_all, 0) AS clicks_unique_all,
       coalesce(k.unique_human, 0) AS clicks_unique_human,
       (SELECT count(*) FROM deliveries d
        WHERE d.campaign_id = c.id AND d.status = 'sent') AS sent,
       (SELECT count(*) FROM deliveries d
        WHERE d.campaign_id = c.id AND d.status = 'bounced') AS hard_bounces,
       (SELECT count(DISTINCT b.delivery_id) FROM bounces b
        WHERE b.campaign_id = c.id AND NOT b.hard) AS soft_bounces,
       (SELECT coalesce(jsonb_object_agg(u.scope, u.people), '{}'::jsonb)
        FROM (SELECT CASE WHEN l.topic_id IS NULL THEN l.channel ELSE 'topic' END AS scope,
                     count(DISTINCT l.contact_id) AS people
              FROM consents l
              WHERE l.action = 'withdraw' AND l.evidence ->> 'campaign_id' = c.id::text
              GROUP BY 1) AS u) AS unsubscribes_by_scope,
       (SELECT count(DISTINCT l.contact_id) FROM consents l
        WHERE l.action = 'withdraw' AND l.evidence ->> 'campaign_id' = c.id::text)
           AS unsubscribed_people,
       (SELECT count(DISTINCT s.email_hash)
        FROM suppressions s
        LEFT JOIN deliveries d
               ON d.id = CASE WHEN s.detail ->> 'delivery_id' ~ '^[0-9]{1,18}$'
                              THEN (s.detail ->> 'delivery_id')::bigint END
        WHERE s.reason = 'complaint'
          AND (d.campaign_id = c.id OR s.detail ->> 'campaign_id' = c.id::text)) AS complaints
FROM campaigns c
LEFT JOIN report_totals o ON o.campaign_id = c.id AND o.kind = 'open' AND o.link_id = 0
LEFT JOIN report_totals k ON k.campaign_id = c.id AND k.kind = 'click' AND k.link_id = 0
WHERE c.id = ANY($1::bigint[])
