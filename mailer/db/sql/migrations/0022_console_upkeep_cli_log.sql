-- Console uploads that outlive their process, erasure of rejects files, and the CLI in
-- the operator log (issue #20's review).
--
-- An upload is imported by the console process that took it; killed (kill -9, a crash,
-- the machine), it left the row `running` for ever. The process now holds a lease on each
-- of its running uploads and renews it; a row whose lease ran out is `interrupted` (its
-- import's one transaction rolled back with the process: nothing was imported). Rows
-- running at this migration get a lease as if just begun.
ALTER TABLE console_uploads
    ADD COLUMN lease_until timestamptz NOT NULL DEFAULT now() + interval '2 minutes',
    DROP CONSTRAINT console_uploads_state_check,
    ADD CONSTRAINT console_uploads_state_check
        CHECK (state IN ('running', 'done', 'refused', 'failed', 'interrupted'));
CREATE INDEX console_uploads_running_idx ON console_uploads (lease_until)
    WHERE state = 'running';

-- A rejects file holds the addresses of rows never imported. An erasure (GDPR art. 17)
-- must reach them, but they are gzip: the sha256 of every address in a file is kept
-- beside it (mailer.core.addresses.address_hash), and an erasure drops the files that
-- hold the person's hash, saying when.
ALTER TABLE console_uploads
    ADD COLUMN rejects_hashes bytea[],
    ADD COLUMN rejects_erased_at timestamptz;
CREATE INDEX console_uploads_rejects_hashes_idx ON console_uploads USING gin (rejects_hashes)
    WHERE rejects_hashes IS NOT NULL;

-- `mailer …` commands log their writes too, as the OS user who ran them.
ALTER TABLE operator_log
    DROP CONSTRAINT operator_log_actor_kind_check,
    ADD CONSTRAINT operator_log_actor_kind_check
        CHECK (actor_kind IN ('api_key', 'operator', 'cli'));

-- A running campaign's deliveries by state (campaign_status_counts, the console's
-- dashboard and campaign page, the API's campaign status): the rows still to send are
-- counted through the claim's index, which did not hold their state, so Postgres read
-- every queued row from the table (a sequential scan: 166 ms for a 100,000-delivery
-- campaign, 10,142 buffers). With the state carried in the index (not a key: the claim's
-- order is unchanged, and a state change never was a HOT update) the count is an
-- index-only scan over the rows ahead of the claim: 41 ms, 305 buffers (bench/README.md).
DROP INDEX deliveries_claimable_idx;
CREATE INDEX deliveries_claimable_idx ON deliveries (campaign_id, next_attempt_at, id)
    INCLUDE (status) WHERE status IN ('queued', 'deferred');
