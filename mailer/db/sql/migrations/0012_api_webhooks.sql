-- The operator API (issue: operator HTTP API and webhooks): the append-only
-- operator log, hashed API keys, idempotency records, and the webhook outbox.

-- Every write an operator or a system makes through the API or the console:
-- who (an API key or a console operator), what (action), on which object, when.
-- Append-only like the consent ledger and the privacy log: a log that can be
-- edited proves nothing. `audit export` includes it.
CREATE TABLE operator_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor_kind  text NOT NULL CHECK (actor_kind IN ('api_key', 'operator')),
    actor_id    text NOT NULL,         -- the key's prefix, or the operator's login
    action      text NOT NULL,         -- 'contacts.upsert', 'campaign.pause'…
    object_kind text,
    object_id   text,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX operator_log_at_idx ON operator_log (at);
CREATE FUNCTION operator_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the operator log is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER operator_log_append_only BEFORE UPDATE OR DELETE ON operator_log
    FOR EACH ROW EXECUTE FUNCTION operator_log_append_only();

-- API keys: only the SHA-256 of the secret is kept (the key is 256 random bits,
-- so a fast hash is enough: no dictionary to guess from) and a short prefix
-- shown in lists and logs to recognise it. Revoked or expired keys stay, so
-- the operator log keeps naming them.
CREATE TABLE api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL,
    prefix       text NOT NULL UNIQUE,
    secret_hash  bytea NOT NULL,
    scopes       text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE TRIGGER api_keys_no_delete BEFORE DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION refuse_delete();

-- Idempotency-Key on writes: the first request's answer, replayed to a retry
-- with the same key (and refused for a different body under the same key).
-- Claimed by INSERT before the work, in the work's transaction: a concurrent
-- retry waits on the row lock and then replays.
CREATE TABLE api_idempotency (
    key_id       bigint NOT NULL,
    idem_key     text NOT NULL,
    request_hash bytea NOT NULL,
    status       integer,
    body         text,          -- the answer as sent (replayed byte for byte)
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_id, idem_key)
);
CREATE INDEX api_idempotency_created_idx ON api_idempotency (created_at);

-- Webhook endpoints: where events go, which events, and the signing secret
-- (Standard Webhooks: whsec_ + base64; kept in clear since we must sign with
-- it). disabled_at/why: set by the dispatcher after persistent failure.
CREATE TABLE webhook_endpoints (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url           text NOT NULL,
    events        text[] NOT NULL,
    secret        text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz,
    disabled_why  text
);

-- The outbox: one row per event, written by the transaction of the change
-- (triggers below, or the opt-out's own statement), so a committed change is
-- an event that will be delivered. Personal data is not copied here: the
-- dispatcher reads the contact's address when it sends, so an erasure also
-- erases it from every event not yet delivered or replayed later.
CREATE TABLE webhook_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type        text NOT NULL,
    contact_id  bigint,
    campaign_id bigint,
    data        jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_events_created_idx ON webhook_events (created_at);

-- One row per (endpoint, event): its own attempts and backoff. order_key is
-- what events are ordered by for one receiver (the contact, else the campaign).
CREATE TABLE webhook_deliveries (
    endpoint_id  bigint NOT NULL REFERENCES webhook_endpoints (id),
    event_id     bigint NOT NULL REFERENCES webhook_events (id),
    order_key    text NOT NULL,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    next_at      timestamptz NOT NULL DEFAULT now(),
    last_status  integer,
    last_error   text,
    delivered_at timestamptz,
    PRIMARY KEY (endpoint_id, event_id)
);
-- The dispatcher's claim walks pending rows in event order and stops at its
-- batch size (not a sort of the whole backlog); the per-key "no earlier pending
-- event" probe.
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (event_id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_key_idx ON webhook_deliveries (endpoint_id, order_key, event_id)
    WHERE status = 'pending';

-- Write the events of a set of changes to the outbox and fan them out to the
-- endpoints subscribed to each type. Events are recorded only while some
-- endpoint (enabled or not) subscribes to their type: a 1 M-row import with
-- no subscriber writes nothing extra. Called by triggers and by stores, in the
-- caller's transaction. Input: a jsonb array of {type, contact_id,
-- campaign_id, data}, in the order they happened.
CREATE FUNCTION webhook_emit(p_events jsonb) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    WITH wanted AS (
        SELECT e.ord, e.value->>'type' AS type,
               (e.value->>'contact_id')::bigint AS contact_id,
               (e.value->>'campaign_id')::bigint AS campaign_id,
               coalesce(e.value->'data', '{}') AS data
        FROM jsonb_array_elements(p_events) WITH ORDINALITY AS e (value, ord)
        WHERE EXISTS (SELECT 1 FROM webhook_endpoints w WHERE (e.value->>'type') = ANY (w.events))
    ), written AS (
        INSERT INTO webhook_events (type, contact_id, campaign_id, data)
        SELECT type, contact_id, campaign_id, data FROM wanted ORDER BY ord
        RETURNING id, type, contact_id, campaign_id
    ), fanned AS (
        INSERT INTO webhook_deliveries (endpoint_id, event_id, order_key)
        SELECT w.id, x.id,
               coalesce('contact:' || x.contact_id, 'campaign:' || x.campaign_id, 'event')
        FROM written x JOIN webhook_endpoints w ON x.type = ANY (w.events)
        RETURNING 1
    )
    SELECT count(*) INTO n FROM written;
    IF n > 0 THEN
        -- Wakes the dispatchers at commit (one notification per transaction).
        PERFORM pg_notify('webhook_events', '');
    END IF;
    RETURN n;
END $$;

-- Consent grants and withdrawals, from every door (API, import, tracker,
-- inbound, console): one statement-level trigger, set-based, so a bulk import
-- costs one INSERT … SELECT per batch, and nothing when no one subscribes.
CREATE FUNCTION consents_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhook_endpoints
                   WHERE events && ARRAY['contact.consent.granted', 'contact.consent.withdrawn']) THEN
        RETURN NULL;
    END IF;
    -- webhook_emit's two inserts, straight from the transition table (no jsonb array
    -- built and unpacked for a 25,000-row import batch).
    WITH typed AS (
        SELECT a.*, CASE a.action WHEN 'grant' THEN 'contact.consent.granted'
                                  ELSE 'contact.consent.withdrawn' END AS type
        FROM added a WHERE a.action IN ('grant', 'withdraw')
    ), written AS (
        INSERT INTO webhook_events (type, contact_id, data)
        SELECT t.type, t.contact_id,
               jsonb_build_object('consent_id', t.id, 'channel', t.channel,
                                  'action', t.action, 'kind', t.kind, 'topic_id', t.topic_id,
                                  'source', t.source, 'obtained_at', t.obtained_at,
                                  'ends_at', t.ends_at)
        FROM typed t
        WHERE EXISTS (SELECT 1 FROM webhook_endpoints w WHERE t.type = ANY (w.events))
        ORDER BY t.id
        RETURNING id, type, contact_id
    ), fanned AS (
        INSERT INTO webhook_deliveries (endpoint_id, event_id, order_key)
        SELECT w.id, x.id, 'contact:' || x.contact_id
        FROM written x JOIN webhook_endpoints w ON x.type = ANY (w.events)
        RETURNING 1
    )
    SELECT count(*) INTO n FROM written;
    IF n > 0 THEN
        PERFORM pg_notify('webhook_events', '');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER consents_outbox AFTER INSERT ON consents
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION consents_outbox();

-- delivery.bounced: first-hop 5xx (the engine) and hard DSNs (inbound) both
-- set the delivery `bounced`. A row trigger whose WHEN is false for every
-- other update: the engine's batched `sent` updates queue nothing.
CREATE FUNCTION deliveries_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM webhook_emit(jsonb_build_array(jsonb_build_object(
        'type', 'delivery.bounced', 'contact_id', NEW.contact_id,
        'campaign_id', NEW.campaign_id,
        'data', jsonb_build_object('delivery_id', NEW.id, 'smtp_code', NEW.smtp_code,
                                   'smtp_reply', NEW.smtp_reply))));
    RETURN NULL;
END $$;
CREATE TRIGGER deliveries_outbox AFTER UPDATE OF status ON deliveries
    FOR EACH ROW WHEN (NEW.status = 'bounced' AND OLD.status IS DISTINCT FROM 'bounced')
    EXECUTE FUNCTION deliveries_outbox();

-- delivery.complained: a complaint recorded by inbound (ARF, ESP webhook).
CREATE FUNCTION complaints_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM webhook_emit(jsonb_build_array(jsonb_build_object(
        'type', 'delivery.complained',
        'contact_id', (SELECT d.contact_id FROM deliveries d WHERE d.id = NEW.delivery_id),
        'campaign_id', NEW.campaign_id,
        'data', jsonb_build_object('delivery_id', NEW.delivery_id,
                                   'feedback_type', NEW.feedback_type))));
    RETURN NULL;
END $$;
CREATE TRIGGER complaints_outbox AFTER INSERT ON complaints
    FOR EACH ROW EXECUTE FUNCTION complaints_outbox();

-- campaign.paused / campaign.finished: whoever moves it (operator, API,
-- reputation guard, the engine finishing).
CREATE FUNCTION campaigns_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM webhook_emit(jsonb_build_array(jsonb_build_object(
        'type', CASE NEW.status WHEN 'paused' THEN 'campaign.paused' ELSE 'campaign.finished' END,
        'campaign_id', NEW.id,
        'data', jsonb_build_object('slug', NEW.slug, 'status', NEW.status,
                                   'pause_reason', NEW.pause_reason))));
    RETURN NULL;
END $$;
CREATE TRIGGER campaigns_outbox AFTER UPDATE OF status ON campaigns
    FOR EACH ROW WHEN (NEW.status IN ('paused', 'done') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION campaigns_outbox();
