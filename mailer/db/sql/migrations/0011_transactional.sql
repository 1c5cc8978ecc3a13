-- Transactional and exempt messages (CASL s.6(6)): one row per message, the
-- durable queue of the engine's transactional lane and its archive at once.
--
-- Ids come from the deliveries' own sequence: a tracking, unsubscribe or VERP
-- token names "delivery N", and a number is then never both a campaign
-- delivery and a transactional message (a token for one can never act on the
-- other's contact).
CREATE TABLE transactional_messages (
    id                  bigint PRIMARY KEY DEFAULT nextval('deliveries_id_seq'),
    -- The template's file name (templates/transactional/<template>.toml) and
    -- the stored version of every file it renders from.
    template            text NOT NULL,
    template_version_id bigint NOT NULL REFERENCES template_versions (id),
    -- The whole template definition as enqueued (subject, sender, basis…):
    -- with the version's files and `data`, what re-renders the message.
    definition          jsonb NOT NULL,
    basis               text NOT NULL CHECK (basis IN (
                            'quote', 'transaction', 'warranty_recall_safety',
                            'account_information', 'employment', 'product_update',
                            'legal_notice', 'commercial')),
    -- NULL only for a message refused because the address was erased: the
    -- refusal must not bring the address back (GDPR art. 17).
    contact_id          bigint,
    domain              text,
    locale              text,
    data                jsonb NOT NULL,
    -- A commercial template's consent, as it stood at enqueue (the footer
    -- cites it); NULL for the exempt bases, which need none.
    consent_id          bigint,
    consent_kind        text,
    consent_source      text,
    consent_obtained_at timestamptz,
    consent_date_only   boolean NOT NULL DEFAULT false,
    -- The caller's key: a retried request returns the first message's id.
    idempotency_key     text UNIQUE,
    status              text NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'sending', 'sent', 'deferred', 'bounced',
                                          'failed', 'skipped', 'uncertain', 'refused')),
    -- refused: the reason (a rule name) and its words; also why a message was
    -- let through despite an opt-out (e.g. "unsubscribed_channel: CASL s.6(6)(c)").
    refusal             text,
    note                text,
    attempts            integer NOT NULL DEFAULT 0,
    first_attempt_at    timestamptz,
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    lease_until         timestamptz,
    worker              text,
    skip_reason         text,
    smtp_code           integer,
    smtp_reply          text,
    message_id          text,
    -- The archive (DESIGN "Messages"): render inputs and envelope, and the
    -- SHA-256 of the exact bytes handed to SMTP.
    render_inputs       jsonb,
    sha256              bytea,
    size_bytes          integer,
    enqueued_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    replied_at          timestamptz,
    sent_at             timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
-- The lane's claim path: only messages still to send, oldest due first.
CREATE INDEX transactional_claimable_idx ON transactional_messages (next_attempt_at, id)
    WHERE status IN ('queued', 'deferred');
CREATE INDEX transactional_sending_idx ON transactional_messages (lease_until)
    WHERE status = 'sending';
CREATE INDEX transactional_contact_idx ON transactional_messages (contact_id);
CREATE INDEX transactional_enqueued_idx ON transactional_messages (enqueued_at);
