-- 0003: the privacy log — who erased whose personal data, when, under which rule.
--
-- Erasure itself needs no new column: contacts are anonymised in place
-- (email, email_hash, name NULL, erased_at set) and a hashed 'erasure'
-- suppression keeps the address from coming back (0001). What was missing is
-- the record an auditor or a data protection officer asks for: every hygiene
-- purge and every erasure request, with the operator, the rule and the count
-- (GDPR art. 5(2) accountability, art. 30 records of processing).

CREATE TABLE privacy_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action       text NOT NULL CHECK (action IN ('purge', 'erase')),
    -- The purge rule ("inactive >= 12 months, no valid express consent") or
    -- the request ("data subject request").
    rule         text NOT NULL,
    contacts     integer NOT NULL CHECK (contacts >= 0),
    -- Rows touched per table, so the log shows what an erasure did.
    details      jsonb NOT NULL DEFAULT '{}',
    -- sha256 of the address of an erasure request (the suppression keeps the
    -- same hash): lets a later export answer "erased on …" without the address.
    subject_hash bytea,
    db_user      text NOT NULL DEFAULT current_user,
    os_user      text,
    performed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX privacy_log_subject_idx ON privacy_log (subject_hash) WHERE subject_hash IS NOT NULL;

-- A log that can be edited proves nothing: append-only, like the ledger.
CREATE FUNCTION privacy_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the privacy log is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER privacy_log_append_only BEFORE UPDATE OR DELETE ON privacy_log
    FOR EACH ROW EXECUTE FUNCTION privacy_log_append_only();
