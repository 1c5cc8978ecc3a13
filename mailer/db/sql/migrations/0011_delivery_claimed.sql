-- A claimed delivery is not in flight (issue 15). Before, a claim put a whole
-- batch (500 rows) in `sending`, and a worker killed mid-batch left all of it
-- `uncertain`, though at most one message per SMTP connection can be on the
-- wire: measured, 3,524 uncertain rows after 20 kills, 2,283 never sent.
--
-- Now a claim leaves rows `claimed` (leased, not started); a row becomes
-- `sending` in the statement committed right before its MAIL FROM
-- (send.sql: start_sending). After a crash, expired `claimed` rows go back to
-- the queue and only expired `sending` rows become `uncertain`.
--
-- The new constraint is checked without a long exclusive lock: added NOT
-- VALID (only new rows are checked), then validated under a lock that lets
-- the engine go on writing.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
    CHECK (status IN ('queued', 'claimed', 'sending', 'sent', 'deferred', 'bounced', 'failed',
                      'skipped', 'uncertain')) NOT VALID;
ALTER TABLE deliveries VALIDATE CONSTRAINT deliveries_status_check;

-- Leased rows (claimed or sending) are found by their lease: the sweep after a
-- crash and the lease renewal. They are few (at most what the workers hold), so
-- the campaigns' questions about them (finish_campaigns, the status counts)
-- still go through deliveries_campaign_status_idx, which holds every state
-- but queued and deferred (migration 0006), as before.
DROP INDEX deliveries_sending_idx;
CREATE INDEX deliveries_leased_idx ON deliveries (lease_until)
    WHERE status IN ('claimed', 'sending');
