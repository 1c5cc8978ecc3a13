-- Contact import speed (issue #21): contacts.email_hash loses its index.
--
-- The hash (sha256 of the normalised address: the key to suppressions, which
-- outlive erasure) is random, so every new contact's entry went to a random
-- page of the index: at a million contacts that unique index cost the
-- import's backend more than the heap insert itself (bench/README.md,
-- "Import", session 6). A hash index measured the same, so there is none: the
-- hash is checked to BE the address's digest, and its uniqueness follows from
-- the address's unique index. Readers that know the address find the contact
-- by it (inbound attribution); those that know only a hash (a suppression)
-- meet the contacts in one hashed pass.
ALTER TABLE contacts DROP CONSTRAINT contacts_email_hash_key;
-- Every writer stores address_hash(address); a row that does not could never
-- have met its suppressions, so it is repaired rather than refused.
UPDATE contacts SET email_hash = sha256(convert_to(email, 'UTF8'))
WHERE email_hash IS DISTINCT FROM sha256(convert_to(email, 'UTF8'));
ALTER TABLE contacts ADD CONSTRAINT contacts_email_hash_is_digest
    CHECK (email_hash = sha256(convert_to(email, 'UTF8')));

-- consent_current (channel, newest_at) goes the same way: newest_at is a
-- consent's date, random for an import's contacts, and the index cost as much
-- as the heap insert of the row. The audience asks it one question, "whose
-- ledger has rows dated after the send time?" (answered from the ledger),
-- which is usually nobody. Whatever the send time T, a row with newest_at > T
-- either was dated ahead of when it was first written (newest_at >
-- written_at: rare, a small partial index), or was written after T (an index
-- on written_at, which grows at its right edge: one value per transaction).
-- The audience adds that implied condition so the planner combines the two.
-- written_at is when the row was first written, never updated: a row merged
-- later with a newer date passes newest_at > written_at and so is found.
ALTER TABLE consent_current ADD COLUMN written_at timestamptz NOT NULL DEFAULT now();
DROP INDEX consent_current_newest_idx;
CREATE INDEX consent_current_ahead_idx ON consent_current (channel, newest_at)
    WHERE newest_at > written_at;
CREATE INDEX consent_current_written_idx ON consent_current (written_at);
