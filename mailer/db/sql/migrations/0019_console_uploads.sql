-- Files operators upload in the browser console: a contacts CSV (the import of
-- `mailer contacts import`) or a suppression list (`mailer suppress import`).
-- The import itself is recorded in `imports` as the CLI's is; this row adds
-- who uploaded it, how it ended (done, refused with nothing written, failed)
-- and the rejects file the operator downloads to fix the rows (gzip: a rejects
-- CSV holds addresses, kept in the database so any console instance serves it).
CREATE TABLE console_uploads (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind           text NOT NULL CHECK (kind IN ('contacts', 'suppressions')),
    file_name      text NOT NULL,
    operator_email text NOT NULL,
    options        jsonb NOT NULL DEFAULT '{}',
    state          text NOT NULL DEFAULT 'running'
                   CHECK (state IN ('running', 'done', 'refused', 'failed')),
    -- The CLI's record of the import (imports.id); no foreign key, as the ledger's
    -- evidence names imports: a record stays readable whatever happens to the other.
    import_id      bigint,
    summary        jsonb NOT NULL DEFAULT '{}',
    error          text,
    rows_rejected  integer NOT NULL DEFAULT 0,
    rejects_gz     bytea,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz
);
-- The import records list names the console upload behind each import.
CREATE INDEX console_uploads_import_idx ON console_uploads (import_id) WHERE import_id IS NOT NULL;
