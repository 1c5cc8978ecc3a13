-- 0001: the foundation schema.
-- Sized for 10 M contacts and 100 M events: bigint identities everywhere, text
-- with CHECK constraints instead of enum types (adding a value to a CHECK is a
-- plain migration; ALTER TYPE … ADD VALUE cannot be used in the same
-- transaction), events partitioned by month.
--
-- The bulk tables (ledger, preferences, deliveries, events) carry no foreign
-- keys: each FK costs a per-row trigger (~5 µs), which measured at 40 % of a
-- million-row import and would be the same share of a campaign freeze.
-- Instead their parents (contacts, topics, campaigns) are never deleted — a
-- trigger refuses it; erasure anonymises in place — and every bulk insert
-- takes its ids from a join with the parent table, so nothing can dangle.

CREATE TABLE topics (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug               text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name               text NOT NULL,
    description        text NOT NULL DEFAULT '',
    -- Service notices are opt-out (everyone with consent gets them unless they
    -- said no); newsletters are opt-in (only contacts who subscribed to the topic).
    default_subscribed boolean NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE contacts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Normalised (lower-cased) address; NULL once the contact is erased.
    email            text UNIQUE,
    -- sha256 of the normalised address: the join key to suppressions, which must
    -- outlive erasure. NULL once erased (the suppression keeps its own copy).
    email_hash       bytea UNIQUE,
    name             text,
    locale           text NOT NULL DEFAULT 'en',
    attributes       jsonb NOT NULL DEFAULT '{}',
    last_activity_at timestamptz,
    -- Per-contact tracking opt-out (no pixel, no click rewriting).
    tracking         boolean NOT NULL DEFAULT true,
    erased_at        timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((erased_at IS NULL) = (email IS NOT NULL AND email_hash IS NOT NULL))
);

-- The consent ledger: append-only. A change of consent is a new row, never an
-- update, so the history answers "who, when, how, from what source" for any
-- day (CASL s.13: the sender bears the burden of proving consent).
CREATE TABLE consents (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    contact_id  bigint NOT NULL,
    channel     text NOT NULL CHECK (channel IN ('email', 'sms', 'postal', 'phone')),
    action      text NOT NULL CHECK (action IN ('grant', 'withdraw', 'expire')),
    kind        text CHECK (kind IN ('express', 'implied_purchase', 'implied_contract',
                                     'implied_inquiry', 'implied_publication')),
    -- Set on rows that record a topic preference rather than channel consent.
    topic_id    bigint,
    source      text NOT NULL,
    obtained_at timestamptz NOT NULL,
    -- End of an ongoing contract, or of a publication's declared relevance.
    ends_at     timestamptz,
    evidence    jsonb NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((action = 'withdraw') = (kind IS NULL) OR topic_id IS NOT NULL)
);
-- Serves the per-contact evaluation (audience, explain) and the import's
-- "is this grant already recorded" probe.
CREATE INDEX consents_contact_idx ON consents (contact_id, channel, obtained_at, id);

-- Append-only is enforced, not hoped for. The one exception is erasure (GDPR
-- art. 17), which scrubs evidence inside a transaction that sets
-- mailer.ledger_rewrite = 'erasure'.
CREATE FUNCTION consents_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('mailer.ledger_rewrite', true) = 'erasure' THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RAISE EXCEPTION 'the consent ledger is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER consents_append_only BEFORE UPDATE OR DELETE ON consents
    FOR EACH ROW EXECUTE FUNCTION consents_append_only();

-- Contacts and topics are never deleted: erasure anonymises a contact in
-- place, so every reference to it (ledger, deliveries, preferences) stays
-- whole and report totals stay true.
CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are never deleted (erase or retire instead)', TG_TABLE_NAME;
END $$;
CREATE TRIGGER contacts_no_delete BEFORE DELETE ON contacts
    FOR EACH ROW EXECUTE FUNCTION refuse_delete();
CREATE TRIGGER topics_no_delete BEFORE DELETE ON topics
    FOR EACH ROW EXECUTE FUNCTION refuse_delete();

-- Current preferences (the ledger keeps the history of the person's own changes).
-- No foreign keys here: at a million rows per import, per-row FK triggers
-- cost more than the whole merge. Contacts and topics are never deleted
-- (erasure anonymises; see the no-delete triggers), so nothing can dangle.
CREATE TABLE contact_topics (
    contact_id bigint NOT NULL,
    topic_id   bigint NOT NULL,
    subscribed boolean NOT NULL,
    -- Where the current state comes from: 'import 12 line 40', 'preference centre'…
    source     text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (contact_id, topic_id)
);

CREATE TABLE contact_channels (
    contact_id bigint NOT NULL,
    channel    text NOT NULL CHECK (channel IN ('email', 'sms', 'postal', 'phone')),
    enabled    boolean NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (contact_id, channel)
);

-- Keyed by the address hash, not the contact, so that a suppression survives
-- the erasure of the contact and blocks a re-import of the same address.
CREATE TABLE suppressions (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email_hash bytea NOT NULL,
    scope      text NOT NULL CHECK (scope IN ('global', 'channel', 'topic')),
    channel    text CHECK (channel IN ('email', 'sms', 'postal', 'phone')),
    topic_id   bigint,
    reason     text NOT NULL CHECK (reason IN ('unsubscribe', 'hard_bounce', 'complaint',
                                               'registry', 'manual', 'erasure')),
    source     text NOT NULL,
    detail     jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((scope = 'channel') = (channel IS NOT NULL)),
    CHECK ((scope = 'topic') = (topic_id IS NOT NULL))
);
-- One row per (address, scope, target, reason): repeats are idempotent.
CREATE UNIQUE INDEX suppressions_key ON suppressions
    (email_hash, scope, coalesce(channel, ''), coalesce(topic_id, 0), reason);

CREATE TABLE template_versions (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL,
    sha256     bytea NOT NULL,
    -- Every file the template needs (campaign template and the layouts it
    -- extends), so an archived message can be re-rendered byte for byte.
    files      jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, sha256)
);

CREATE TABLE campaigns (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug                 text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name                 text NOT NULL,
    kind                 text NOT NULL DEFAULT 'regular' CHECK (kind IN ('regular', 'repermission')),
    topic_id             bigint NOT NULL REFERENCES topics (id),
    channel              text NOT NULL DEFAULT 'email' CHECK (channel IN ('email', 'sms', 'postal', 'phone')),
    policy               text NOT NULL DEFAULT 'casl' CHECK (policy IN ('casl', 'can_spam', 'gdpr')),
    status               text NOT NULL DEFAULT 'draft'
                         CHECK (status IN ('draft', 'scheduled', 'running', 'paused', 'done', 'cancelled')),
    segment              text,
    active_within_months integer CHECK (active_within_months > 0),
    -- The whole campaign file as created (subject, from, sender identity,
    -- template, locales, tracking, throttle): the record of what was asked.
    definition           jsonb NOT NULL,
    template_version_id  bigint REFERENCES template_versions (id),
    scheduled_at         timestamptz,
    -- When the audience was frozen into deliveries, and how many contacts
    -- each exclusion reason kept out (the audience report).
    audience_at          timestamptz,
    audience_counts      jsonb,
    started_at           timestamptz,
    finished_at          timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER campaigns_no_delete BEFORE DELETE ON campaigns
    FOR EACH ROW EXECUTE FUNCTION refuse_delete();
CREATE INDEX campaigns_active_idx ON campaigns (status) WHERE status IN ('scheduled', 'running');

-- The delivery ledger: one row per (campaign, contact), whatever happens.
CREATE TABLE deliveries (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id         bigint NOT NULL,
    contact_id          bigint NOT NULL,
    status              text NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'sending', 'sent', 'deferred', 'bounced',
                                          'failed', 'skipped', 'uncertain')),
    -- Recipient domain at freeze time: the throttle's key.
    domain              text NOT NULL,
    -- The consent that justified this message, as it stood at freeze time,
    -- so the footer and the auditor can cite it even if the ledger moves on.
    consent_id          bigint,
    consent_kind        text,
    consent_source      text,
    consent_obtained_at timestamptz,
    attempts            integer NOT NULL DEFAULT 0,
    -- The retry deadline counts from the first attempt, not from the freeze
    -- (a scheduled or paused campaign must not fail on its first 4xx).
    first_attempt_at    timestamptz,
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    lease_until         timestamptz,
    worker              text,
    skip_reason         text,
    smtp_code           integer,
    smtp_reply          text,
    message_id          text,
    sent_at             timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (campaign_id, contact_id)
);
-- The claim query's path: only rows still to send, in order, per campaign.
CREATE INDEX deliveries_claimable_idx ON deliveries (campaign_id, next_attempt_at, id)
    WHERE status IN ('queued', 'deferred');
CREATE INDEX deliveries_sending_idx ON deliveries (lease_until) WHERE status = 'sending';
CREATE INDEX deliveries_contact_idx ON deliveries (contact_id);
CREATE INDEX deliveries_campaign_status_idx ON deliveries (campaign_id, status);

CREATE TABLE links (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id bigint NOT NULL REFERENCES campaigns (id),
    url         text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (campaign_id, url)
);

-- For every sent message, what reproduces it byte for byte and the hash of
-- the exact bytes handed to SMTP.
CREATE TABLE archive (
    delivery_id         bigint PRIMARY KEY REFERENCES deliveries (id),
    template_version_id bigint NOT NULL REFERENCES template_versions (id),
    render_inputs       jsonb NOT NULL,
    sha256              bytea NOT NULL,
    size_bytes          integer NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);

-- Opens and clicks: the 100 M-row table. Partitioned by month so old months
-- detach cheaply; no foreign keys (the tracker writes by COPY in batches and
-- must never fail a batch on a race with erasure).
CREATE TABLE events (
    occurred_at timestamptz NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('open', 'click')),
    delivery_id bigint NOT NULL,
    campaign_id bigint NOT NULL,
    link_id     bigint,
    machine     boolean NOT NULL DEFAULT false,
    user_agent  text,
    ip_prefix   cidr
) PARTITION BY RANGE (occurred_at);
CREATE TABLE events_default PARTITION OF events DEFAULT;
-- First open / first click per delivery (unique counts) and per-campaign scans.
CREATE INDEX events_delivery_idx ON events (delivery_id, kind, occurred_at);
CREATE INDEX events_campaign_idx ON events (campaign_id, kind, occurred_at);

-- Creates the monthly partitions covering [from_month, from_month + months).
CREATE FUNCTION ensure_event_partitions(from_month date, months integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m date;
    part text;
BEGIN
    FOR i IN 0 .. months - 1 LOOP
        m := date_trunc('month', from_month)::date + make_interval(months => i);
        part := format('events_%s', to_char(m, 'YYYY_MM'));
        IF to_regclass(part) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                           part, m, m + interval '1 month');
        END IF;
    END LOOP;
END $$;

-- Merges jsonb objects in order (later keys win): used to merge attributes
-- of an address listed on several lines of one import file.
CREATE AGGREGATE jsonb_merge_agg(jsonb) (SFUNC = jsonb_concat, STYPE = jsonb, INITCOND = '{}');

-- Who imported what, when: the record a re-import or an auditor reads.
CREATE TABLE imports (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('contacts', 'suppressions')),
    file_name   text NOT NULL,
    file_sha256 bytea NOT NULL,
    rows_read   integer NOT NULL,
    rows_valid  integer NOT NULL,
    rows_rejected integer NOT NULL,
    summary     jsonb NOT NULL DEFAULT '{}',
    imported_by text NOT NULL DEFAULT current_user,
    imported_at timestamptz NOT NULL DEFAULT now()
);

-- Token buckets shared by every send worker: global and per recipient
-- domain. A worker takes a small grant of tokens in one statement and spends
-- it locally, so the configured rates hold however many workers run.
CREATE TABLE throttle_buckets (
    key          text PRIMARY KEY,
    tokens       double precision NOT NULL,
    refreshed_at timestamptz NOT NULL,
    -- Adaptive slow-down: the configured rate is multiplied by this factor.
    -- A 421 / "too many connections" halves it; it recovers by doubling
    -- every minute without a new complaint, up to 1.
    factor       double precision NOT NULL DEFAULT 1 CHECK (factor > 0 AND factor <= 1),
    penalised_at timestamptz,
    -- Time senders spent waiting on this bucket (seconds), for the dashboard.
    waited_s     double precision NOT NULL DEFAULT 0
);

-- Grants up to p_want tokens; returns how many, and how long to wait for the
-- next one when none were granted.
CREATE FUNCTION throttle_take(p_key text, p_rate double precision, p_burst double precision,
                              p_want integer, OUT granted integer, OUT wait_s double precision)
LANGUAGE plpgsql AS $$
DECLARE
    b      throttle_buckets;
    now_ts timestamptz := clock_timestamp();
    rate   double precision;
BEGIN
    INSERT INTO throttle_buckets (key, tokens, refreshed_at) VALUES (p_key, p_burst, now_ts)
    ON CONFLICT (key) DO NOTHING;
    SELECT * INTO b FROM throttle_buckets WHERE key = p_key FOR UPDATE;
    -- The stored factor is the one set by the last penalty; the recovery is
    -- computed from penalised_at each time, never written back (writing it
    -- back would compound: 1/64 recovered in a minute instead of six).
    rate := p_rate * CASE WHEN b.penalised_at IS NULL THEN 1
                          ELSE least(1, b.factor * 2 ^ floor(
                              extract(epoch FROM now_ts - b.penalised_at) / 60)) END;
    b.tokens := least(p_burst, b.tokens + extract(epoch FROM now_ts - b.refreshed_at) * rate);
    granted := greatest(0, least(p_want, floor(b.tokens)))::integer;
    wait_s := CASE WHEN granted > 0 THEN 0 ELSE (1 - b.tokens) / rate END;
    UPDATE throttle_buckets
    SET tokens = b.tokens - granted, refreshed_at = now_ts,
        factor = CASE WHEN rate >= p_rate THEN 1 ELSE factor END,
        penalised_at = CASE WHEN rate >= p_rate THEN NULL ELSE penalised_at END
    WHERE key = p_key;
END $$;

-- A domain said "slow down": halve its rate (never below 1/64 of the
-- configured one), shared by every worker at once.
CREATE FUNCTION throttle_penalise(p_key text) RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    result double precision;
BEGIN
    INSERT INTO throttle_buckets (key, tokens, refreshed_at, factor, penalised_at)
    VALUES (p_key, 0, clock_timestamp(), 0.5, clock_timestamp())
    ON CONFLICT (key) DO UPDATE
        SET factor = greatest(1.0 / 64, throttle_buckets.factor / 2),
            penalised_at = clock_timestamp(), tokens = 0
        -- One burst of 421s from several senders is one complaint, not eight.
        WHERE throttle_buckets.penalised_at IS NULL
           OR throttle_buckets.penalised_at < clock_timestamp() - interval '5 seconds';
    SELECT factor INTO result FROM throttle_buckets WHERE key = p_key;
    RETURN result;
END $$;

-- Messages sent per day, for the warm-up cap (one row per day).
CREATE TABLE send_days (
    day  date PRIMARY KEY,
    sent integer NOT NULL DEFAULT 0
);

-- Grants up to p_want sends from today's warm-up cap.
CREATE FUNCTION warmup_take(p_day date, p_cap integer, p_want integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    already integer;
    granted integer;
BEGIN
    INSERT INTO send_days (day) VALUES (p_day) ON CONFLICT (day) DO NOTHING;
    SELECT sent INTO already FROM send_days WHERE day = p_day FOR UPDATE;
    granted := least(p_want, greatest(0, p_cap - already));
    UPDATE send_days SET sent = sent + granted WHERE day = p_day;
    RETURN granted;
END $$;
