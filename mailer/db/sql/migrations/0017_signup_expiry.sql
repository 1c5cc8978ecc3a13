-- Sign-up expiry deletes what the unconfirmed request left behind (issue 17,
-- GDPR art. 5(1)(e) storage limitation): the confirmation mail went through
-- the transactional lane, which creates a contact (no consent) for an unknown
-- address. The message now says whether it created its contact, so expiry
-- can delete that contact when nothing else refers to it, and never a
-- contact who existed before (forms.sql: requests_expire).
ALTER TABLE transactional_messages
    ADD COLUMN contact_created boolean NOT NULL DEFAULT false;

-- Contacts are never deleted (0001: every reference to one stays whole). The
-- one exception is a contact nothing refers to, which expiry removes: the
-- delete is allowed only inside a transaction that asked for it
-- (mailer.delete_unreferenced_contacts, set locally by the expiry sweep), and
-- even then never for a contact with a ledger row or a delivery.
CREATE FUNCTION contacts_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('mailer.delete_unreferenced_contacts', true) = 'on'
       AND NOT EXISTS (SELECT 1 FROM consents WHERE contact_id = OLD.id)
       AND NOT EXISTS (SELECT 1 FROM deliveries WHERE contact_id = OLD.id) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% rows are never deleted (erase or retire instead)', TG_TABLE_NAME;
END $$;
DROP TRIGGER contacts_no_delete ON contacts;
CREATE TRIGGER contacts_no_delete BEFORE DELETE ON contacts
    FOR EACH ROW EXECUTE FUNCTION contacts_refuse_delete();
