-- Outgoing webhooks: endpoints, the dispatcher's claim and outcomes, replay,
-- and the figures `webhooks list` and the metrics show. The outbox itself is
-- written by webhook_emit() (the migration) in the transaction of each change.

-- name: endpoint_add
INSERT INTO webhook_endpoints (url, events, secret) VALUES ($1, $2::text[], $3)
RETURNING id, url, events, secret, created_at, disabled_at, disabled_why

-- name: endpoint_list
-- Each endpoint with its backlog: pending, failed, delivered, and the age of
-- its oldest pending event (the lag a receiver sees).
SELECT w.id, w.url, w.events, w.created_at, w.disabled_at, w.disabled_why,
       count(*) FILTER (WHERE d.status = 'pending') AS pending,
       count(*) FILTER (WHERE d.status = 'failed') AS failed,
       count(*) FILTER (WHERE d.status = 'delivered') AS delivered,
       extract(epoch FROM now() - min(e.created_at) FILTER (WHERE d.status = 'pending'))
           AS oldest_pending_s
FROM webhook_endpoints w
LEFT JOIN webhook_deliveries d ON d.endpoint_id = w.id
LEFT JOIN webhook_events e ON e.id = d.event_id
GROUP BY w.id ORDER BY w.id

-- name: endpoint_enable
-- Re-enabling after a fix: its pending events go out again at once.
WITH enabled AS (
    UPDATE webhook_endpoints SET disabled_at = NULL, disabled_why = NULL WHERE id = $1
    RETURNING id
)
UPDATE webhook_deliveries SET next_at = now()
WHERE endpoint_id IN (SELECT id FROM enabled) AND status = 'pending'

-- name: endpoint_exists
SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = $1)

-- name: claim_due
-- Due deliveries of enabled endpoints, oldest event first, and only the oldest
-- pending event of each (endpoint, contact or campaign): events reach a
-- receiver in order per contact, and one failing contact holds back only its
-- own. Locked for the dispatcher's transaction (SKIP LOCKED: several
-- dispatchers share the work); a later event of a key another dispatcher holds
-- sees that one pending and waits. The CTE walks the pending index in event
-- order and stops at $1 rows, so a claim costs the same with 100 or 100,000
-- events waiting. The contact's address is read now, not copied into the
-- outbox: an erased contact's events carry no address.
WITH due AS (
    SELECT d.endpoint_id, d.event_id, d.attempts
    FROM webhook_deliveries d
    WHERE d.status = 'pending' AND d.next_at <= now()
      AND EXISTS (SELECT 1 FROM webhook_endpoints w
                  WHERE w.id = d.endpoint_id AND w.disabled_at IS NULL)
      AND NOT EXISTS (
          SELECT 1 FROM webhook_deliveries p
          WHERE p.endpoint_id = d.endpoint_id AND p.order_key = d.order_key
            AND p.status = 'pending' AND p.event_id < d.event_id)
    ORDER BY d.event_id
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
)
SELECT due.endpoint_id, due.event_id, due.attempts, e.type, e.contact_id, e.campaign_id,
       e.data, e.created_at, w.url, w.secret, c.email, c.name, c.locale, c.erased_at
FROM due
JOIN webhook_endpoints w ON w.id = due.endpoint_id
JOIN webhook_events e ON e.id = due.event_id
LEFT JOIN contacts c ON c.id = e.contact_id
ORDER BY due.event_id

-- name: record_outcomes
-- A claimed batch's outcomes in one statement: delivered, retry at next_at, or
-- failed (its retry window is over).
UPDATE webhook_deliveries d
SET status = r.status, attempts = d.attempts + 1, next_at = r.next_at,
    last_status = r.code, last_error = r.error,
    delivered_at = CASE WHEN r.status = 'delivered' THEN now() END
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[], $5::integer[],
            $6::text[]) AS r (endpoint_id, event_id, status, next_at, code, error)
WHERE d.endpoint_id = r.endpoint_id AND d.event_id = r.event_id

-- name: endpoints_disable
-- After persistent failure (an event undelivered for the whole retry window), or by an
-- operator's hand (`mailer webhooks disable`, the console).
UPDATE webhook_endpoints SET disabled_at = now(), disabled_why = $2
WHERE id = ANY ($1::bigint[]) AND disabled_at IS NULL
RETURNING id, url

-- name: replay
-- Deliver again every event of the range the endpoint subscribes to (new ones
-- it missed, and ones already delivered or failed): same webhook-id, so
-- receivers that already have one ignore it.
INSERT INTO webhook_deliveries (endpoint_id, event_id, order_key)
SELECT w.id, e.id, coalesce('contact:' || e.contact_id, 'campaign:' || e.campaign_id, 'event')
FROM webhook_endpoints w
JOIN webhook_events e ON e.type = ANY (w.events)
WHERE w.id = $1 AND e.created_at >= $2 AND e.created_at < $3
ON CONFLICT (endpoint_id, event_id) DO UPDATE
    SET status = 'pending', attempts = 0, next_at = now(), last_error = NULL

-- name: backlog
-- The metrics: pending deliveries and the age of the oldest (the outbox lag),
-- disabled endpoints.
SELECT count(*) AS pending,
       coalesce(extract(epoch FROM now() - min(e.created_at)), 0)::float8 AS oldest_s,
       (SELECT count(*) FROM webhook_endpoints WHERE disabled_at IS NOT NULL) AS disabled
FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
WHERE d.status = 'pending'


-- name: endpoints_disabled
-- The console dashboard's alert: endpoints switched off after their retry window (no
-- backlog counts, which read every delivery).
SELECT id, url, events, created_at, disabled_at, disabled_why
FROM webhook_endpoints WHERE disabled_at IS NOT NULL ORDER BY id

-- name: endpoint_remove
-- A throwaway endpoint (the demo's local receiver) goes with its deliveries when its
-- receiver stops: webhook_emit() fans every later event out to each endpoint, enabled
-- or not, so one left behind would collect deliveries nobody will ever take.
WITH gone AS (DELETE FROM webhook_deliveries WHERE endpoint_id = $1)
DELETE FROM webhook_endpoints WHERE id = $1
