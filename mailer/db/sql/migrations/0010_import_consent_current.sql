-- 0010: a contact import keeps consent_current itself.
--
-- The ledger trigger (0005) groups and ranks the rows of each INSERT into
-- consents. An import records hundreds of thousands of grants per statement,
-- at most one per contact in each of its batches, and it knows which
-- contacts it has just created: it writes their consent_current rows in the
-- same statement, row by row, and merges the others with the trigger's own
-- ON CONFLICT rule (mailer/contacts/contacts.sql, import_write_ledger). The
-- trigger stands aside only for a transaction that says so, with the
-- transaction-local setting mailer.consent_current = 'import' (the import
-- sets it for its own transaction); every other writer (the tracker, the
-- re-permission pages, psql) is summarised by the trigger as before.
-- tests/integration/test_consent_current.py proves both ways give the rows
-- consent_current_rebuild() gives.
DROP TRIGGER consent_current_add ON consents;
CREATE TRIGGER consent_current_add AFTER INSERT ON consents
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT
    WHEN (current_setting('mailer.consent_current', true) IS DISTINCT FROM 'import')
    EXECUTE FUNCTION consent_current_add();
