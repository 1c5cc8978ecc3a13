-- Inbound mail about a transactional notice (issues 16 and 18): a DSN, a feedback
-- report or a mailto unsubscribe whose token or Message-ID names a row of
-- transactional_messages, not of deliveries (both take ids from one sequence, so
-- a number names one or the other). The message records which: delivery_id for a
-- campaign delivery, transactional_id for a notice, never both.
ALTER TABLE inbound_messages ADD COLUMN transactional_id bigint;

-- The old rule "attributed iff delivery_id" becomes "attributed iff exactly one of
-- them". Its constraint was unnamed: found by its definition.
DO $$
DECLARE
    name text;
BEGIN
    SELECT conname INTO STRICT name FROM pg_constraint
    WHERE conrelid = 'inbound_messages'::regclass AND contype = 'c'
      AND pg_get_constraintdef(oid) LIKE '%delivery_id IS NULL%attributed_by IS NULL%';
    EXECUTE format('ALTER TABLE inbound_messages DROP CONSTRAINT %I', name);
END
$$;
ALTER TABLE inbound_messages ADD CONSTRAINT inbound_messages_attributed_check
    CHECK (num_nonnulls(delivery_id, transactional_id)
           = CASE WHEN attributed_by IS NULL THEN 0 ELSE 1 END);
CREATE INDEX inbound_transactional_idx ON inbound_messages (transactional_id)
    WHERE transactional_id IS NOT NULL;
