-- The send engine: claim, lease, record outcomes, throttle buckets, warm-up,
-- what a worker needs of a campaign. Run by mailer/send/store.py.

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
-- which is how pause and cancel take effect within one batch. Claimed rows
-- are leased, not started: nothing of them has reached SMTP, so a worker
-- that dies holding them hands them back through the sweep (claimed rows
-- go back to the queue, attempts untouched; only `sending` rows, started by
-- start_sending right before their MAIL FROM, become `uncertain`). Whether
-- the frozen consent was given as a date is read from its ledger row, which
-- never changes: one primary-key probe per claimed row, not a column per delivery.
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
SET status = 'claimed', lease_until = now() + make_interval(secs => $3), worker = $4,
    updated_at = now()
FROM picked, contacts c
WHERE d.id = picked.id AND c.id = d.contact_id
RETURNING d.id, d.campaign_id, d.contact_id, d.domain, d.attempts, d.first_attempt_at,
          d.consent_kind, d.consent_source, d.consent_obtained_at,
          c.email, c.name, c.locale, c.attributes, c.tracking,
          coalesce((SELECT l.obtained_date_only FROM consents l WHERE l.id = d.consent_id), false)
              AS consent_date_only

-- name: renew_leases
-- SKIP LOCKED: never waits on a row. The rows it would wait for are being
-- written by this worker's recorder (a start or an outcome), which locks them
-- in its own order: a renewal waiting while holding others deadlocked with it
-- (Postgres aborted one; an aborted start round deferred its messages for a
-- minute). A row skipped here is renewed a third of a lease later.
UPDATE deliveries d SET lease_until = now() + make_interval(secs => $2)
FROM (SELECT id FROM deliveries WHERE worker = $1 AND status IN ('claimed', 'sending')
      FOR NO KEY UPDATE SKIP LOCKED) mine
WHERE d.id = mine.id

-- name: release_batch
-- Rows never handed to SMTP go back to the queue (shutdown, pause, a start
-- refused) — or, if their campaign was cancelled meanwhile, to their final
-- state. A `sending` row is released only by the worker that started it and
-- knows its MAIL FROM never left: its attempt did not happen.
UPDATE deliveries d
SET status = CASE WHEN c.status = 'cancelled' THEN 'skipped'
                  WHEN d.attempts - CASE WHEN d.status = 'sending' THEN 1 ELSE 0 END > 0
                      THEN 'deferred'
                  ELSE 'queued' END,
    skip_reason = CASE WHEN c.status = 'cancelled' THEN 'cancelled' ELSE d.skip_reason END,
    attempts = d.attempts - CASE WHEN d.status = 'sending' THEN 1 ELSE 0 END,
    first_attempt_at = CASE WHEN d.status = 'sending' AND d.attempts = 1 THEN NULL
                            ELSE d.first_attempt_at END,
    lease_until = NULL, worker = NULL, updated_at = now()
FROM campaigns c
WHERE d.id = ANY($1::bigint[]) AND d.status IN ('claimed', 'sending') AND d.worker = $2
  AND c.id = d.campaign_id

-- name: record_outcomes
-- The recorder's outcome writer (mailer/send/recorder.py), one statement and
-- one commit per batch: rows this worker holds, started ones and claimed ones
-- that never reached SMTP (skipped at the re-check, deferred by the warm-up
-- cap or an outage). A row swept to `uncertain` because this worker's lease
-- lapsed (it was slow, not dead) still takes the outcome the worker knows:
-- known beats uncertain. A deferral in a campaign cancelled meanwhile becomes
-- its final `skipped`. The archive ($10-$14) and the suppressions ($15: a hard
-- bounce, 5.1.x or 5.2.1, means the address is dead, on the channel for every
-- future campaign) follow exactly the rows written. One statement rather than
-- a transaction of three: its fixed cost (round trips, BEGIN, COMMIT) is paid
-- every batch while messages flow.
WITH outcome AS (
    SELECT *
    FROM unnest($1::bigint[], $2::text[], $3::integer[], $4::text[], $5::text[],
                $6::timestamptz[], $7::timestamptz[], $8::text[])
         AS o (id, status, code, reply, message_id, at, retry_at, skip_reason)
), recorded AS (
    UPDATE deliveries d
    SET status = CASE WHEN o.status = 'deferred' AND c.status = 'cancelled' THEN 'skipped'
                      ELSE o.status END,
        smtp_code = o.code, smtp_reply = o.reply, message_id = o.message_id,
        sent_at = CASE WHEN o.status = 'sent' THEN o.at END,
        next_attempt_at = coalesce(o.retry_at, d.next_attempt_at),
        skip_reason = CASE WHEN o.status = 'deferred' AND c.status = 'cancelled' THEN 'cancelled'
                           ELSE o.skip_reason END,
        lease_until = NULL, worker = NULL, updated_at = now()
    FROM outcome o, campaigns c
    WHERE d.id = o.id AND d.status IN ('claimed', 'sending', 'uncertain') AND d.worker = $9
      AND c.id = d.campaign_id
    RETURNING d.id, d.contact_id
), archived AS (
    INSERT INTO archive (delivery_id, template_version_id, render_inputs, sha256, size_bytes)
    SELECT a.* FROM unnest($10::bigint[], $11::bigint[], $12::jsonb[], $13::bytea[],
                           $14::integer[]) AS a (id, version, inputs, sha256, size)
    WHERE a.id IN (SELECT id FROM recorded)
    ON CONFLICT (delivery_id) DO NOTHING
), suppressed AS (
    INSERT INTO suppressions (email_hash, scope, channel, reason, source, detail)
    SELECT c.email_hash, 'channel', 'email', 'hard_bounce', 'smtp',
           jsonb_build_object('delivery_id', r.id)
    FROM recorded r JOIN contacts c ON c.id = r.contact_id
    WHERE r.id = ANY($15::bigint[]) AND c.email_hash IS NOT NULL
    ON CONFLICT DO NOTHING
)
SELECT id FROM recorded

-- name: start_sending
-- The recorder's start writer: the durable "started" mark of $1, committed
-- before any of these messages' MAIL FROM, for all the worker's connections
-- at once. It is also the last check before DATA: a contact who opted out,
-- was suppressed or erased since the claim is not started but `skipped`, for
-- the reason the audience would give (campaigns.sql: audience). Only what can
-- change after the claim is read, by key, for each row: erasure, suppressions
-- of the address (global, the campaign's channel, its topic), the channel and
-- topic preferences, the consent ledger's standing (consent_current, or the
-- ledger itself when it holds rows dated after now, as the audience reads
-- it); the segment and inactivity were checked at the claim.
-- tests/integration/test_start_check.py holds this equal to the audience for
-- each such change. A campaign no longer running leaves its rows claimed and
-- answers `held` (the worker hands them back); a row no longer this worker's
-- (its lease lapsed and it was swept, or an erasure skipped it) is not
-- returned at all, and must not be sent.
WITH asked AS (
    SELECT d.id, p.status = 'running' AS running, r.reason
    FROM deliveries d
    JOIN campaigns p ON p.id = d.campaign_id
    JOIN topics t ON t.id = p.topic_id
    JOIN contacts c ON c.id = d.contact_id
    LEFT JOIN contact_channels ch ON ch.contact_id = d.contact_id AND ch.channel = p.channel
    LEFT JOIN contact_topics ct ON ct.contact_id = d.contact_id AND ct.topic_id = p.topic_id
    LEFT JOIN LATERAL (
        SELECT s.withdrawn, s.best_id AS id, s.best_kind AS kind, s.best_valid_until AS valid_until
        FROM consent_current s
        WHERE s.contact_id = d.contact_id AND s.channel = p.channel AND s.newest_at <= now()
        UNION ALL
        SELECT l.withdrawal IS NOT NULL, (g.b).id, (g.b).kind, (g.b).valid_until
        FROM consent_current s
        CROSS JOIN LATERAL (
            SELECT * FROM consent_latest(p.channel, now()) x WHERE x.contact_id = s.contact_id
            OFFSET 0
        ) l
        CROSS JOIN LATERAL (
            SELECT consent_best(l.withdrawal[1], l.express[1], l.purchase[1], l.contract[1],
                                l.inquiry[1], l.publication[1], now()) AS b
        ) g
        WHERE s.contact_id = d.contact_id AND s.channel = p.channel AND s.newest_at > now()
    ) k ON true
    CROSS JOIN LATERAL (
        SELECT bool_or(s.reason = 'hard_bounce') AS hard_bounced,
               bool_or(s.reason = 'complaint') AS complained,
               bool_or(s.reason = 'registry') AS registry,
               bool_or(s.scope = 'global' AND s.reason IN ('unsubscribe', 'manual', 'erasure'))
                   AS suppressed_global,
               bool_or(s.scope = 'channel' AND s.reason IN ('unsubscribe', 'manual', 'erasure'))
                   AS unsubscribed_channel,
               bool_or(s.scope = 'topic' AND s.reason IN ('unsubscribe', 'manual', 'erasure'))
                   AS unsubscribed_topic
        FROM suppressions s
        WHERE s.email_hash = c.email_hash
          AND (s.scope = 'global' OR (s.scope = 'channel' AND s.channel = p.channel)
               OR (s.scope = 'topic' AND s.topic_id = p.topic_id))
    ) b
    CROSS JOIN LATERAL (
        -- GDPR: express consent only (as the audience's `consent`).
        SELECT k.id IS NOT NULL AND (p.policy <> 'gdpr' OR k.kind = 'express') AS standing
    ) g
    CROSS JOIN LATERAL (
        -- The first failing reason, in the order of consent.Reason.
        SELECT CASE
                   WHEN c.erased_at IS NOT NULL THEN 'erased'
                   WHEN b.hard_bounced THEN 'hard_bounced'
                   WHEN b.complained THEN 'complained'
                   WHEN b.registry THEN 'registry'
                   WHEN b.suppressed_global THEN 'suppressed_global'
                   WHEN b.unsubscribed_channel OR NOT ch.enabled THEN 'unsubscribed_channel'
                   WHEN b.unsubscribed_topic OR NOT ct.subscribed THEN 'unsubscribed_topic'
                   WHEN ct.subscribed IS NULL AND NOT t.default_subscribed
                       THEN 'not_subscribed_topic'
                   -- CAN-SPAM 15 U.S.C. 7704(a)(4): only an unrenewed opt-out excludes.
                   WHEN p.policy = 'can_spam' THEN
                       CASE WHEN k.withdrawn AND NOT g.standing THEN 'consent_withdrawn' END
                   WHEN g.standing AND (k.valid_until IS NULL OR now() < k.valid_until) THEN NULL
                   WHEN g.standing THEN 'consent_expired'
                   WHEN k.withdrawn THEN 'consent_withdrawn'
                   ELSE 'no_consent'
               END AS reason
    ) r
    WHERE d.id = ANY($1::bigint[]) AND d.status = 'claimed' AND d.worker = $2
), started AS (
    UPDATE deliveries d
    SET status = CASE WHEN a.reason IS NULL THEN 'sending' ELSE 'skipped' END,
        skip_reason = a.reason,
        attempts = d.attempts + CASE WHEN a.reason IS NULL THEN 1 ELSE 0 END,
        first_attempt_at = CASE WHEN a.reason IS NULL THEN coalesce(d.first_attempt_at, now())
                                ELSE d.first_attempt_at END,
        lease_until = CASE WHEN a.reason IS NULL THEN d.lease_until END,
        worker = CASE WHEN a.reason IS NULL THEN d.worker END,
        updated_at = now()
    FROM asked a
    -- Checked again under the row's lock: a sweep may have taken it meanwhile.
    WHERE d.id = a.id AND a.running AND d.status = 'claimed' AND d.worker = $2
    RETURNING d.id, d.status, d.skip_reason
)
SELECT id, status, skip_reason FROM started
UNION ALL
SELECT id, 'held', NULL FROM asked WHERE NOT running

-- name: sweep_leases
-- Rows whose worker died (their lease lapsed): claimed ones had not started
-- and go back to the queue (or to `deferred` if an earlier attempt was
-- made), their attempts untouched; `sending` ones had started, their MAIL
-- FROM may have left, and become `uncertain`: reported, not resent. Start
-- marks are committed without waiting for the WAL flush (start_writer_session),
-- so a crash of the database server may have lost the last of them: a row
-- claimed before the server's memory was last lost (server_life, migration
-- 0020; updated_at is the claim's time while a row is claimed) may have been
-- started, and is `uncertain` too. Returns the new state of each.
WITH life AS (
    INSERT INTO server_life DEFAULT VALUES ON CONFLICT (one) DO NOTHING RETURNING since
), since AS (
    SELECT since FROM life UNION ALL SELECT since FROM server_life LIMIT 1
)
UPDATE deliveries
SET status = CASE WHEN status = 'sending' OR updated_at < (SELECT since FROM since)
                      THEN 'uncertain'
                  WHEN attempts > 0 THEN 'deferred' ELSE 'queued' END,
    lease_until = NULL,
    worker = CASE WHEN status = 'sending' OR updated_at < (SELECT since FROM since)
                      THEN worker END,
    updated_at = now()
WHERE status IN ('claimed', 'sending') AND lease_until < now()
RETURNING status

-- name: current_setting
-- A setting of the connection a writer's rounds run on: how the tests see the
-- start writer's commit mode (start_writer_session).
SELECT current_setting($1)

-- name: start_writer_session
-- The start writer's connection commits its rounds without waiting for the
-- WAL flush (measured: a round was mostly that wait, 5-7 ms on a shared
-- disk, and every connection waited on it before MAIL FROM). What a start
-- mark must survive is its worker's death, and an asynchronous commit is
-- visible to every session at once and kept by the server; what it does not
-- survive, a crash of the server itself, sweep_leases covers by treating rows
-- claimed before the crash as started: the first writer after a crash
-- records when the server's memory became whole again (server_life, which
-- crash recovery and a standby's promotion empty), before its first mark.
-- Not with synchronous standbys: there the operator asked for commits that
-- survive a failover to them, which the marks would not. Reset when the
-- connection goes back to the pool (asyncpg's reset runs RESET ALL).
WITH life AS (INSERT INTO server_life DEFAULT VALUES ON CONFLICT (one) DO NOTHING)
SELECT set_config('synchronous_commit',
                  CASE WHEN current_setting('synchronous_standby_names') = '' THEN 'off'
                       ELSE current_setting('synchronous_commit') END,
                  false)

-- name: finish_campaigns
-- A running campaign with nothing left to send or retry is done.
UPDATE campaigns c SET status = 'done', finished_at = now(), updated_at = now()
WHERE c.status = 'running'
  -- Two questions, one per index (migration 0006): rows still to send or retry,
  -- and rows in flight.
  AND NOT EXISTS (SELECT 1 FROM deliveries d
                  WHERE d.campaign_id = c.id AND d.status IN ('queued', 'deferred'))
  AND NOT EXISTS (SELECT 1 FROM deliveries d
                  WHERE d.campaign_id = c.id AND d.status IN ('claimed', 'sending'))
RETURNING c.id, c.slug

-- name: throttle_take
-- $2 is the rate the caller is allowed now (configured rate x the share
-- mailer.core.aimd computes from factor and since_cut_s, which come back with the grant).
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

-- name: campaign_for_engine
-- Everything a worker needs of a campaign, in one lookup: the audience's
-- inputs for the re-check before sending, the definition and template files
-- to compose from.
SELECT c.id, c.slug, c.topic_id, t.default_subscribed, c.channel, c.policy, c.segment,
       c.active_within_months, c.definition, c.template_version_id, tv.files,
       tv.name AS template
FROM campaigns c
JOIN topics t ON t.id = c.topic_id
JOIN template_versions tv ON tv.id = c.template_version_id
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
