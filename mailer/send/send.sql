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
-- which is how pause and cancel take effect within one batch. The lease is
-- renewed while the worker lives; a row found `sending` with an expired
-- lease was in flight during a crash and becomes `uncertain`, never resent
-- on its own (the guarantee listmonk and Mautic break). Whether the frozen
-- consent was given as a date is read from its ledger row, which never
-- changes: one primary-key probe per claimed row, not a column per delivery.
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
          c.email, c.name, c.locale, c.attributes, c.tracking,
          coalesce((SELECT l.obtained_date_only FROM consents l WHERE l.id = d.consent_id), false)
              AS consent_date_only

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
