-- Contact import speed (issue #21): two indexes an import fills stop
-- deduplicating (bench/README.md, "Import", session 7).
--
-- B-tree deduplication (Postgres 13+) merges equal keys into posting lists
-- when a leaf page fills, to save space. consent_current (written_at) holds
-- one value per transaction, so each import batch's 25,000 rows are all
-- duplicates: every page fill rewrote the page as a posting list, and later
-- entries were merged into it, work paid per row for an index that only ever
-- answers "written after T" at its right edge. consents (contact_id, channel,
-- obtained_at, id) ends with the ledger's id, so it never holds two equal
-- keys: the pass that looks for duplicates when a page fills never finds any.
-- Without deduplication both grow at their right edge as plain entries.
-- Measured: 200,000 fresh rows, backend CPU of the ledger statement 4.53 /
-- 4.72 s with deduplication, 4.32 / 4.27 s without it on written_at, 4.15 s
-- without it on both (interleaved runs, shared machine).
ALTER INDEX consent_current_written_idx SET (deduplicate_items = off);
ALTER INDEX consents_contact_idx SET (deduplicate_items = off);
