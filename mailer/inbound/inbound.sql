-- Inbound mail: the raw store, the processor's batches and their effects, the
-- reputation guard's rates, the operator's views. Run by mailer/inbound/store.py.

-- ---------------------------------------------------------------- the raw store

-- name: message_store
-- Before the 250: one autocommitted statement, so the row is durable when the
-- server answers. The same bytes again (a relay retrying after a lost 250, a
-- file ingested twice) find the row already there: one message, one effect.
WITH added AS (
    INSERT INTO inbound_messages (sha256, source, peer, mail_from, rcpt_to, raw)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (sha256) DO NOTHING
    RETURNING id
)
SELECT id, true AS fresh FROM added
UNION ALL
SELECT id, false FROM inbound_messages WHERE sha256 = $1
LIMIT 1

-- name: message_find
-- A concurrent store of the same bytes committed after message_store's
-- snapshot: its row is read here.
SELECT id FROM inbound_messages WHERE sha256 = $1

-- ---------------------------------------------------------------- processing

-- name: batch_claim
-- The oldest pending messages, locked for this transaction; SKIP LOCKED lets
-- several processors share the queue. Rolled back (a crash, an error), they
-- stay pending and are taken again: processed exactly once, at commit.
SELECT id, source, mail_from, rcpt_to, raw, received_at
FROM inbound_messages
WHERE state = 'pending'
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED

-- name: batch_attribute
-- Which delivery each message is about: the signed token's, else the
-- original Message-ID's (exact match: its random part is not guessable),
-- else the latest message sent to the reported address within $6 days.
-- A token or Message-ID may name a transactional notice instead (its id comes
-- from the deliveries' sequence: one number, one message): `notice` says so,
-- and the recipient fallback takes the latest of campaign deliveries AND
-- notices, so a notice's DSN is never pinned on a campaign delivery.
-- The branches are tried in order and the first hit wins (LIMIT 1 stops the
-- Append). Every lookup is by primary key or an index.
WITH m AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[])
             AS m (inbound_id, token_id, msgid_id, msgid, rcpt)
)
SELECT m.inbound_id, a.delivery_id, a.how, d.campaign_id,
       coalesce(d.contact_id, t.contact_id) AS contact_id, coalesce(d.status, t.status) AS status,
       c.email_hash, c.erased_at IS NOT NULL AS erased, coalesce(a.notice, false) AS notice
FROM m
LEFT JOIN LATERAL (
    (SELECT d.id AS delivery_id, 'token' AS how, false AS notice
     FROM deliveries d WHERE d.id = m.token_id)
    UNION ALL
    (SELECT t.id, 'token', true FROM transactional_messages t WHERE t.id = m.token_id)
    UNION ALL
    (SELECT d.id, 'message_id', false FROM deliveries d
     WHERE d.id = m.msgid_id AND d.message_id = m.msgid)
    UNION ALL
    (SELECT t.id, 'message_id', true FROM transactional_messages t
     WHERE t.id = m.msgid_id AND t.message_id = m.msgid)
    UNION ALL
    (SELECT r.id, 'recipient', r.notice FROM contacts c
     CROSS JOIN LATERAL (
         (SELECT d.id, d.sent_at, false AS notice FROM deliveries d
          WHERE d.contact_id = c.id AND d.sent_at > now() - make_interval(days => $6)
          ORDER BY d.sent_at DESC LIMIT 1)
         UNION ALL
         (SELECT t.id, t.sent_at, true FROM transactional_messages t
          WHERE t.contact_id = c.id AND t.sent_at > now() - make_interval(days => $6)
          ORDER BY t.sent_at DESC LIMIT 1)
     ) r
     WHERE c.email = m.rcpt
     ORDER BY r.sent_at DESC LIMIT 1)
    LIMIT 1
) a ON true
LEFT JOIN deliveries d ON d.id = a.delivery_id AND NOT a.notice
LEFT JOIN transactional_messages t ON t.id = a.delivery_id AND a.notice
LEFT JOIN contacts c ON c.id = coalesce(d.contact_id, t.contact_id)

-- name: notices_bounce
-- A hard bounce of a transactional notice after the relay accepted it: its
-- outcome becomes bounced, as deliveries_bounce does for a campaign's.
UPDATE transactional_messages t SET status = 'bounced', updated_at = now()
FROM unnest($1::bigint[]) AS o (id)
WHERE t.id = o.id AND t.status IN ('sent', 'uncertain')

-- name: deliveries_bounce
-- A hard bounce after the relay accepted the message: the delivery's outcome
-- becomes bounced. Only from sent (or uncertain: the DSN settles it); a
-- delivery already bounced stays as it is.
UPDATE deliveries d SET status = 'bounced', updated_at = now()
FROM unnest($1::bigint[]) AS o (id)
WHERE d.id = o.id AND d.status IN ('sent', 'uncertain')

-- name: bounces_insert
INSERT INTO bounces (delivery_id, campaign_id, contact_id, inbound_id, hard, status, diagnostic)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::boolean[],
                     $6::text[], $7::text[])
ORDER BY 1
ON CONFLICT (delivery_id, inbound_id) DO NOTHING

-- name: complaints_insert
INSERT INTO complaints (delivery_id, campaign_id, inbound_id, feedback_type)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[])
ORDER BY 1
ON CONFLICT (delivery_id, inbound_id) DO NOTHING

-- name: suppressions_insert
-- Hard bounces (reason hard_bounce) and complaints (reason complaint) on the
-- email channel, keyed by the address hash so they outlive an erasure. The
-- detail names the delivery, its campaign and the inbound message: the DSN or
-- ARF report kept in inbound_messages is the evidence.
INSERT INTO suppressions (email_hash, scope, channel, topic_id, reason, source, detail)
SELECT s.email_hash, 'channel', 'email', NULL, s.reason, s.source, s.detail
FROM unnest($1::bytea[], $2::text[], $3::text[], $4::jsonb[])
     AS s (email_hash, reason, source, detail)
ON CONFLICT DO NOTHING

-- name: soft_bounce_suppress
-- $1 contacts that just soft-bounced, $2 the limit, $3 days. Counts, per
-- contact, the distinct deliveries that soft-bounced within $3 days and were
-- sent after the contact's latest delivery that did not bounce (a success
-- resets the count; only deliveries older than the newest soft-bounced one
-- count as successes, not one still in flight). At $2 the address is
-- suppressed like a hard bounce, with the count as its evidence.
WITH touched AS (
    SELECT DISTINCT unnest($1::bigint[]) AS contact_id
), soft AS (
    SELECT b.contact_id, b.delivery_id, d.sent_at, b.inbound_id
    FROM touched t
    JOIN bounces b ON b.contact_id = t.contact_id AND NOT b.hard
                  AND b.occurred_at > now() - make_interval(days => $3)
    JOIN deliveries d ON d.id = b.delivery_id
), newest AS (
    SELECT contact_id, max(sent_at) AS sent_at FROM soft GROUP BY contact_id
), last_ok AS (
    SELECT n.contact_id,
           (SELECT max(d.sent_at) FROM deliveries d
            WHERE d.contact_id = n.contact_id AND d.status = 'sent' AND d.sent_at < n.sent_at
              AND NOT EXISTS (SELECT 1 FROM bounces x WHERE x.delivery_id = d.id)) AS sent_at
    FROM newest n
), counted AS (
    SELECT s.contact_id, count(DISTINCT s.delivery_id) AS n, max(s.inbound_id) AS inbound_id,
           array_agg(DISTINCT s.delivery_id) AS deliveries
    FROM soft s JOIN last_ok o ON o.contact_id = s.contact_id
    WHERE s.sent_at > coalesce(o.sent_at, '-infinity')
    GROUP BY s.contact_id
)
INSERT INTO suppressions (email_hash, scope, channel, topic_id, reason, source, detail)
SELECT c.email_hash, 'channel', 'email', NULL, 'hard_bounce', 'soft bounces',
       jsonb_build_object('soft_bounces', k.n, 'within_days', $3::integer,
                          'inbound_id', k.inbound_id, 'delivery_ids', k.deliveries)
FROM counted k JOIN contacts c ON c.id = k.contact_id
WHERE k.n >= $2 AND c.email_hash IS NOT NULL
ON CONFLICT DO NOTHING
RETURNING email_hash

-- name: batch_done
-- The messages' state, in the transaction of their effects (the id attributed
-- goes to transactional_id when it names a notice): a crash before
-- COMMIT leaves both undone, after it both done. A message about an erased
-- contact keeps its hash, not its bytes nor its sender (GDPR art. 17: the
-- erasure scrubs those already stored, this the ones arriving after it).
UPDATE inbound_messages m
SET state = 'processed', kind = o.kind,
    delivery_id = CASE WHEN o.notice THEN NULL ELSE o.delivery_id END,
    transactional_id = CASE WHEN o.notice THEN o.delivery_id END,
    attributed_by = o.attributed_by, detail = o.detail, processed_at = now(),
    raw = CASE WHEN o.erased THEN ''::bytea ELSE m.raw END,
    mail_from = CASE WHEN o.erased THEN NULL ELSE m.mail_from END
FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::jsonb[], $6::boolean[],
            $7::boolean[])
     AS o (id, kind, delivery_id, attributed_by, detail, erased, notice)
WHERE m.id = o.id AND m.state = 'pending'
RETURNING m.id, extract(epoch FROM now() - m.received_at)::float8 AS waited_s

-- name: message_failed
-- A message whose processing failed on its own (a bug, or data Postgres
-- refuses): kept as unmatched with the error, so it no longer blocks the queue.
UPDATE inbound_messages
SET state = 'processed', kind = 'unmatched', processed_at = now(),
    detail = jsonb_build_object('reason', 'processing failed: ' || $2)
WHERE id = $1 AND state = 'pending'

-- ---------------------------------------------------------------- reputation guard

-- name: guard_rates
-- Per running campaign, over what it sent in the window (and since the
-- guard last paused it): messages sent, hard bounces (at the first hop or by
-- DSN: both are `bounced`) and complaints. First-hop bounces have no
-- sent_at; their updated_at is when they bounced. Per-campaign thresholds
-- come from its file's [reputation] table.
SELECT c.id, c.slug, c.definition -> 'reputation' AS overrides, w.sent, w.bounced,
       (SELECT count(DISTINCT k.delivery_id) FROM complaints k
        JOIN deliveries d ON d.id = k.delivery_id
        WHERE k.campaign_id = c.id
          AND coalesce(d.sent_at, d.updated_at) > greatest(now() - make_interval(secs => $1),
                                                           c.guard_reset_at)) AS complaints
FROM campaigns c
CROSS JOIN LATERAL (
    SELECT count(*) AS sent, count(*) FILTER (WHERE d.status = 'bounced') AS bounced
    FROM deliveries d
    WHERE d.campaign_id = c.id AND d.status IN ('sent', 'bounced')
      AND coalesce(d.sent_at, d.updated_at) > greatest(now() - make_interval(secs => $1),
                                                       c.guard_reset_at)
) w
WHERE c.status = 'running'
ORDER BY c.id

-- ---------------------------------------------------------------- the operator's views

-- name: unmatched_backlog
-- Unmatched messages nobody dismissed yet: the gauge (inbound_unmatched_idx).
SELECT count(*) FROM inbound_messages WHERE kind = 'unmatched' AND dismissed_at IS NULL

-- name: unmatched_list
SELECT id, received_at, source, peer, mail_from, rcpt_to, detail, delivery_id, attributed_by
FROM inbound_messages
WHERE kind = 'unmatched' AND dismissed_at IS NULL
ORDER BY id DESC
LIMIT $1

-- name: unmatched_dismiss
UPDATE inbound_messages SET dismissed_at = now()
WHERE id = ANY($1::bigint[]) AND kind = 'unmatched' AND dismissed_at IS NULL

-- name: message_raw
-- One stored message as received: the evidence behind a suppression.
SELECT raw FROM inbound_messages WHERE id = $1

-- name: kind_counts
-- What inbound has processed, by kind, and what still waits.
SELECT coalesce(kind, 'pending') AS kind, count(*) AS n
FROM inbound_messages GROUP BY 1 ORDER BY 1
