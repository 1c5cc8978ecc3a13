-- 0009: inbound mail (issue 16): bounces, complaints and mailto unsubscribes that
-- come back after a relay accepted our messages, and the reputation guard.
--
-- Every message `mailer inbound serve` accepts (and every file `inbound ingest`
-- reads, every ESP webhook call) is stored here, raw, BEFORE the server answers
-- 250: a crash after the 250 loses nothing, the row is still `pending` and is
-- processed at the next start. The sha256 of the raw bytes is unique, so the same
-- message received twice (a relay retrying after a lost 250, an mbox ingested
-- again) is one row and has its effects once.

CREATE TABLE inbound_messages (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sha256        bytea NOT NULL UNIQUE,
    received_at   timestamptz NOT NULL DEFAULT now(),
    -- smtp (inbound serve), file, mbox, maildir, stdin (inbound ingest), ses (webhook)
    source        text NOT NULL CHECK (source IN ('smtp', 'file', 'mbox', 'maildir', 'stdin',
                                                  'ses')),
    peer          text,        -- the client's address, or the file the message came from
    mail_from     text,
    rcpt_to       text[] NOT NULL DEFAULT '{}',
    raw           bytea NOT NULL,
    state         text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'processed')),
    kind          text CHECK (kind IN ('dsn_hard', 'dsn_soft', 'complaint', 'unsubscribe',
                                       'autoreply', 'unmatched')),
    delivery_id   bigint,
    -- How the delivery was found (mailer/inbound/classify.py): a signed VERP or
    -- unsubscribe token, the original Message-ID, or the recipient address.
    attributed_by text CHECK (attributed_by IN ('token', 'message_id', 'recipient')),
    -- What the classification read (status, diagnostic code, feedback type, why
    -- unmatched…) and which effects it had.
    detail        jsonb NOT NULL DEFAULT '{}',
    processed_at  timestamptz,
    -- An operator looked at an unmatched message (`mailer inbound unmatched --dismiss`).
    dismissed_at  timestamptz,
    CHECK ((state = 'processed') = (kind IS NOT NULL AND processed_at IS NOT NULL)),
    CHECK ((delivery_id IS NULL) = (attributed_by IS NULL))
);
-- The processor's queue: only rows still to process are in it.
CREATE INDEX inbound_pending_idx ON inbound_messages (id) WHERE state = 'pending';
-- The operator's list of messages that matched nothing, and the backlog gauge.
CREATE INDEX inbound_unmatched_idx ON inbound_messages (id)
    WHERE kind = 'unmatched' AND dismissed_at IS NULL;
CREATE INDEX inbound_delivery_idx ON inbound_messages (delivery_id) WHERE delivery_id IS NOT NULL;

-- Bounces reported after the relay accepted a message (a DSN, or an ESP's
-- webhook): hard ones make the delivery `bounced`, soft ones are events that
-- count towards the soft-bounce rule (N in M days, inbound.soft_bounce_*).
-- One row per (delivery, inbound message); the message is the evidence.
CREATE TABLE bounces (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id bigint NOT NULL,
    campaign_id bigint NOT NULL,
    contact_id  bigint NOT NULL,
    inbound_id  bigint NOT NULL,
    hard        boolean NOT NULL,
    status      text,          -- RFC 3463 enhanced status, e.g. 5.1.1
    diagnostic  text,          -- RFC 3464 Diagnostic-Code, as reported
    occurred_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (delivery_id, inbound_id)
);
-- The soft-bounce rule reads one contact's recent bounces; the report one campaign's.
CREATE INDEX bounces_contact_idx ON bounces (contact_id, occurred_at);
CREATE INDEX bounces_campaign_idx ON bounces (campaign_id, hard);

-- Complaints (RFC 5965 feedback reports, ESP complaint webhooks) per delivery:
-- the reputation guard's complaint rate. The suppression (reason complaint)
-- keeps the address blocked; this keeps the count per campaign.
CREATE TABLE complaints (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id   bigint NOT NULL,
    campaign_id   bigint NOT NULL,
    inbound_id    bigint NOT NULL,
    feedback_type text NOT NULL,
    occurred_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (delivery_id, inbound_id)
);
CREATE INDEX complaints_campaign_idx ON complaints (campaign_id, delivery_id);

-- The reputation guard (mailer/inbound/guard.py) pauses a running campaign
-- whose hard-bounce or complaint rate crosses its threshold, and says why here;
-- `campaign status` and the report show it. Any operator transition (resume,
-- pause, cancel) clears it. guard_reset_at: the guard's window starts after its
-- last pause, so a resumed campaign is judged on what it sends from then on.
ALTER TABLE campaigns
    ADD COLUMN pause_reason jsonb,
    ADD COLUMN guard_reset_at timestamptz;
