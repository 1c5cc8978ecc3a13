-- 0007: what a printed consent date means, and topic names per language.
--
-- A consent given as a calendar date ("2018-11-17") is a date, not an
-- instant: it is stored as that date's midnight UTC (so the ledger keeps one
-- ordering and one validity arithmetic), and the ledger now says so. Every
-- place that prints a consent date (message footer, preference centre,
-- `contacts show`) prints a date-only consent as the date given and a
-- timestamp as its day in the sender's zone (mailer/consent_dates.py).
-- Before this, a date-only consent was printed in the sender's zone like an
-- instant: 2018-11-17 became "16 November 2018" in America/Toronto.
--
-- ADD COLUMN with a constant default rewrites nothing (Postgres 11+). The
-- consent_current trigger (0005) reads the columns it names from its
-- transition table, so a new column leaves it as it was.
ALTER TABLE consents
    ADD COLUMN obtained_date_only boolean NOT NULL DEFAULT false,
    ADD COLUMN ends_date_only boolean NOT NULL DEFAULT false,
    -- A date-only value is its date's midnight UTC, nothing else.
    ADD CONSTRAINT consents_obtained_date_only_midnight
        CHECK (NOT obtained_date_only OR (obtained_at AT TIME ZONE 'UTC')::time = '00:00'),
    ADD CONSTRAINT consents_ends_date_only_midnight
        CHECK (NOT ends_date_only
               OR (ends_at IS NOT NULL AND (ends_at AT TIME ZONE 'UTC')::time = '00:00'));

-- The rows recorded before this migration. Only the contact import accepts a
-- date without a time (the tracker and the re-permission page record now()),
-- and it stored such a date as midnight UTC; an imported timestamp of exactly
-- midnight UTC cannot be told apart and is taken as a date, which prints the
-- same day in UTC and the calendar day in any other zone. The ledger is
-- append-only (0001); this one-time correction of how its dates are read is
-- the only update it ever gets, so the guard is lifted for it alone, inside
-- this migration's transaction. Only the midnight rows are rewritten.
ALTER TABLE consents DISABLE TRIGGER consents_append_only;
UPDATE consents
SET obtained_date_only = (obtained_at AT TIME ZONE 'UTC')::time = '00:00',
    ends_date_only = coalesce((ends_at AT TIME ZONE 'UTC')::time = '00:00', false)
WHERE evidence ? 'import_id'
  AND ((obtained_at AT TIME ZONE 'UTC')::time = '00:00'
       OR (ends_at AT TIME ZONE 'UTC')::time = '00:00');
ALTER TABLE consents ENABLE TRIGGER consents_append_only;

-- Topic names per language, {"fr": "Rappels d'entretien", "en": "Service
-- reminders"}: what a recipient reads on the preference centre and the
-- unsubscribe pages. `name` stays the default for any language without one,
-- and the slug the last resort (mailer/topics.py holds the rule).
ALTER TABLE topics
    ADD COLUMN names jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(names) = 'object');
