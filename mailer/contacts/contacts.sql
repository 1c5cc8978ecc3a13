-- Contacts: topics, the import (staging COPY then set-based merge), suppression
-- lists, a contact's story. Run by mailer/contacts/store.py.

-- name: topic_upsert
-- $2 the default name (NULL: the slug for a new topic, unchanged for an
-- existing one), $5 names per language merged into those held: a language
-- mapped to null loses its name, the others keep theirs, so adding the
-- English name later does not drop the French one.
INSERT INTO topics (slug, name, description, default_subscribed, names)
VALUES ($1, coalesce($2, $1), $3, $4, jsonb_strip_nulls($5::jsonb))
ON CONFLICT (slug) DO UPDATE
    SET name = coalesce($2, topics.name), description = EXCLUDED.description,
        default_subscribed = EXCLUDED.default_subscribed,
        names = jsonb_strip_nulls(topics.names || $5::jsonb)
RETURNING id

-- name: topics_list
SELECT id, slug, name, names, description, default_subscribed FROM topics ORDER BY slug

-- name: import_lock
-- One contact import at a time (a transaction-level advisory lock, key
-- "import" in ASCII): a second import waits for the first to commit instead
-- of deadlocking with it on contacts both files hold in different orders,
-- now that an import writes batch by batch. Only imports create contacts, so
-- while this lock is held every new contact id is this import's.
SELECT pg_advisory_xact_lock($1)

-- name: import_session_settings
-- Bulk statements: JIT compilation costs more than it saves here, and the
-- merges want more than 4 MB. UTC: consent validity adds months (0004).
-- mailer.consent_current = 'import': the ledger trigger leaves
-- consent_current to import_write_ledger for the rows this transaction
-- records (migration 0010). All three end with the transaction.
SELECT set_config('jit', 'off', true), set_config('work_mem', '64MB', true),
       set_config('TimeZone', 'UTC', true), set_config('mailer.consent_current', 'import', true)

-- name: import_create_staging
-- import_rows: one batch of valid CSV lines, every address once (the reader
-- puts a repeated address in a later batch), as COPY'd. import_batch: the
-- same with each line's contact id, so that no later statement joins on the
-- address again. import_updates: what the file changes about contacts that
-- already existed, merged line after line and applied once at the end, so
-- that re-importing a file whose lines disagree writes nothing.
-- import_suppressed: the existing contacts found suppressed, each counted
-- once. Temporary and dropped at commit: a failed or refused import leaves
-- nothing behind.
CREATE TEMPORARY TABLE import_rows (
    line             integer NOT NULL,
    email            text NOT NULL,
    email_hash       bytea NOT NULL,
    name             text,
    locale           text,
    attributes       text NOT NULL,   -- JSON built by the reader; parsed once, here
    last_activity_at timestamptz,
    tracking         boolean,
    channel          text NOT NULL,
    kind             text,
    source           text,
    obtained_at      timestamptz,
    ends_at          timestamptz,
    topics           bigint[] NOT NULL,  -- ids of the topics listed
    -- consent_date / consent_ends were given without a time (migration 0007).
    obtained_date_only boolean NOT NULL,
    ends_date_only   boolean NOT NULL
) ON COMMIT DROP;
CREATE TEMPORARY TABLE import_batch (
    id      bigint NOT NULL,
    created boolean NOT NULL,
    -- An existing contact's values as found (NULL: created), as columns: a
    -- whole-row value was taken apart again for each field it was asked for.
    stored_name             text,
    stored_locale           text,
    stored_attributes       jsonb,
    stored_last_activity_at timestamptz,
    stored_tracking         boolean,
    LIKE import_rows
) ON COMMIT DROP;
-- The attributes parsed once, for created and found contacts alike.
ALTER TABLE import_batch ALTER COLUMN attributes TYPE jsonb USING attributes::jsonb;
-- The found contacts of the batch that import_write_ledger writes for (it
-- writes for those created too): those the file changes, locked.
CREATE TEMPORARY TABLE import_locked (id bigint NOT NULL) ON COMMIT DROP;
CREATE TEMPORARY TABLE import_updates (
    id               bigint PRIMARY KEY,
    name             text,
    locale           text,
    attributes       jsonb NOT NULL,
    last_activity_at timestamptz,
    tracking         boolean
) ON COMMIT DROP;
CREATE TEMPORARY TABLE import_suppressed (email_hash bytea PRIMARY KEY) ON COMMIT DROP

-- name: import_id_floor
-- Taken under import_lock: every contact with a higher id is this import's.
SELECT coalesce(max(id), 0) FROM contacts

-- name: import_clear_batch
TRUNCATE import_rows, import_batch, import_locked

-- name: import_analyze_batch
-- Temporary tables are never auto-analyzed; the first batch gives the
-- planner its statistics for the rest.
ANALYZE import_rows

-- name: import_write_contacts
-- The batch's contacts in one statement: existing ones found by address (an
-- index probe each, as a scalar subquery so that the planner cannot turn it
-- into a hash of the whole table: a batch is small next to it), the others
-- given their id from the contacts' sequence in address order and created in
-- that order (the reader sorts each batch: the email index and the primary
-- key then fill in order, and the ledger's and topics' ids follow); the batch
-- recorded with its ids in import_batch for the ledger and topics. Returns
-- how many were created and found, and the lowest id created (the ledger
-- statement tells created contacts from found ones by it). The created rows
-- come out of `batch` already in address order (found's ORDER BY): no sort
-- again.
WITH found AS (
    SELECT s.id AS stored_id, s.name AS stored_name, s.locale AS stored_locale,
           s.attributes AS stored_attributes, s.last_activity_at AS stored_last_activity_at,
           s.tracking AS stored_tracking, r.*
    FROM import_rows r
    LEFT JOIN LATERAL (  -- OFFSET 0: kept a probe per row, never a join of the table
        SELECT c.id, c.name, c.locale, c.attributes, c.last_activity_at, c.tracking
        FROM contacts c WHERE c.email = r.email OFFSET 0) s ON true
    ORDER BY r.email
), batch AS (
    INSERT INTO import_batch
    SELECT coalesce(f.stored_id, nextval('contacts_id_seq')), f.stored_id IS NULL,
           f.stored_name, f.stored_locale, f.stored_attributes, f.stored_last_activity_at,
           f.stored_tracking, f.line, f.email, f.email_hash, f.name, f.locale,
           f.attributes::jsonb, f.last_activity_at, f.tracking, f.channel, f.kind, f.source,
           f.obtained_at, f.ends_at, f.topics, f.obtained_date_only, f.ends_date_only
    FROM found f
    RETURNING id, created, email, email_hash, name, locale, attributes, last_activity_at,
              tracking
), created AS (
    INSERT INTO contacts (id, email, email_hash, name, locale, attributes, last_activity_at,
                          tracking)
    OVERRIDING SYSTEM VALUE
    SELECT b.id, b.email, b.email_hash, b.name, coalesce(b.locale, $1), b.attributes,
           b.last_activity_at, coalesce(b.tracking, true)
    FROM batch b
    WHERE b.created
    RETURNING 1
)
SELECT (SELECT count(*) FROM created) AS created, f.found, f.first_created
FROM (SELECT count(*) FILTER (WHERE NOT created) AS found,
             min(id) FILTER (WHERE created) AS first_created
      FROM batch) f

-- name: import_lock_found
-- The batch's contacts that existed, and what the file changes about them.
-- Whoever writes a contact's consents, topics or channels locks its row
-- first, as the tracker does (contact_lock): the import and a preference save
-- that took consent_current and topic rows in opposite orders deadlocked.
-- Locked in id order, and only those this batch writes to (a new value, a
-- grant not yet recorded, a topic not yet listed): re-importing a file locks
-- nothing and writes nothing. Their new values are kept for the end, merged
-- as the lines come: the last non-empty value of each field wins, attributes
-- merge key by key (later lines win), last activity is the latest. Those
-- suppressed are counted once each ($1: import_id_floor).
WITH found AS MATERIALIZED (
    SELECT b.id, b.email_hash, b.name, b.locale, b.attributes, b.last_activity_at, b.tracking,
           (b.stored_name, b.stored_locale, b.stored_attributes, b.stored_last_activity_at,
            b.stored_tracking)
               IS DISTINCT FROM
               (coalesce(b.name, b.stored_name), coalesce(b.locale, b.stored_locale),
                b.stored_attributes || b.attributes,
                greatest(b.stored_last_activity_at, b.last_activity_at),
                coalesce(b.tracking, b.stored_tracking))
           OR EXISTS (SELECT 1 FROM import_updates u WHERE u.id = b.id) AS changes,
           (b.kind IS NOT NULL AND NOT EXISTS (
               SELECT 1 FROM consents x
               WHERE x.contact_id = b.id AND x.channel = b.channel
                 AND x.obtained_at = b.obtained_at AND x.action = 'grant'
                 AND x.topic_id IS NULL AND x.kind = b.kind AND x.source = b.source
                 AND x.ends_at IS NOT DISTINCT FROM b.ends_at))
           OR EXISTS (
               SELECT 1 FROM unnest(b.topics) AS listed (topic_id)
               WHERE NOT EXISTS (SELECT 1 FROM contact_topics ct
                                 WHERE ct.contact_id = b.id
                                   AND ct.topic_id = listed.topic_id)) AS records
    FROM import_batch b
    WHERE NOT b.created
), locked AS MATERIALIZED (
    -- = ANY: the primary key's index, in id order (a join hashed the whole table).
    SELECT c.id FROM contacts c
    WHERE c.id = ANY (ARRAY(SELECT f.id FROM found f WHERE f.changes OR f.records))
    ORDER BY c.id
    FOR NO KEY UPDATE
), kept AS (
    INSERT INTO import_updates AS u (id, name, locale, attributes, last_activity_at, tracking)
    SELECT f.id, f.name, f.locale, f.attributes, f.last_activity_at, f.tracking
    FROM found f
    WHERE f.changes AND f.id IN (SELECT id FROM locked)
    ON CONFLICT (id) DO UPDATE
        SET name = coalesce(EXCLUDED.name, u.name),
            locale = coalesce(EXCLUDED.locale, u.locale),
            attributes = u.attributes || EXCLUDED.attributes,
            last_activity_at = greatest(u.last_activity_at, EXCLUDED.last_activity_at),
            tracking = coalesce(EXCLUDED.tracking, u.tracking)
    RETURNING 1
), noted AS (
    -- Nothing to write for the others: import_write_ledger passes them by (noting
    -- the few locked costs less than deleting the many that are not).
    INSERT INTO import_locked (id) SELECT l.id FROM locked l
    RETURNING 1
), suppressed AS (
    INSERT INTO import_suppressed (email_hash)
    SELECT f.email_hash FROM found f
    WHERE f.id <= $1
      AND EXISTS (SELECT 1 FROM suppressions s WHERE s.email_hash = f.email_hash)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM locked) AS locked, (SELECT count(*) FROM kept) AS kept,
       (SELECT count(*) FROM noted) AS noted, (SELECT count(*) FROM suppressed) AS suppressed

-- name: import_write_ledger
-- The batch's ledger grants, their consent_current rows and its topic
-- subscriptions, in one statement from one read of the batch.
--
-- The ledger gains a grant only when the file states one not yet recorded
-- (same contact, channel, kind, source, date and end): re-imports add
-- nothing, and an old grant in a file never overrides a later withdrawal: it
-- is already in the ledger, so it is not appended again. A contact created by
-- this batch has no ledger to probe. Evidence names the file and line (CASL
-- s.13: proof of consent). Whether a date came with a time is how it is
-- printed, not which consent it is: a grant held at the same instant is the
-- same grant. $2 is the evidence's part common to every line ({"import_id",
-- "file"}): one pair built per row instead of three (a third of the cost of
-- building the evidence, measured).
--
-- consent_current (0005) for the grants recorded here, row by row: a batch
-- holds each contact once, so each gets at most one new grant and nothing is
-- grouped or ranked. A contact created by this batch has no row yet: a plain
-- insert of its one grant, which is its best. Created by this batch means an
-- id from $3 up ($3: import_write_contacts' first_created, or the largest
-- bigint when it created none): ids come from one sequence, so a contact
-- that the batch found existed before its first nextval and has a lower id;
-- no join back to the batch to ask. Others merge as the ledger
-- trigger merges (GREATEST per kind, the best re-ranked), with ON CONFLICT in
-- contact order: rows another transaction commits meanwhile still count.
--
-- Topics: a topic the person opted out of stays opted out (ON CONFLICT DO
-- NOTHING): an import never overrides a person's own choice. A contact
-- created by this batch has no preferences yet. The source names the import
-- and line; the ledger keeps the person's own changes.
WITH batch AS NOT MATERIALIZED (
    SELECT b.id AS contact_id, b.created, b.line, b.channel, b.kind, b.source, b.obtained_at,
           b.ends_at, b.obtained_date_only, b.ends_date_only, b.topics
    FROM import_batch b
    WHERE b.created OR b.id IN (SELECT l.id FROM import_locked l)
), ledger AS (
    INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at, ends_at,
                          evidence, obtained_date_only, ends_date_only)
    SELECT b.contact_id, b.channel, 'grant', b.kind, b.source, b.obtained_at, b.ends_at,
           $2::jsonb || jsonb_build_object('line', b.line),
           b.obtained_date_only, b.ends_date_only
    FROM batch b
    WHERE b.kind IS NOT NULL
      AND (b.created OR NOT EXISTS (
          SELECT 1 FROM consents x
          WHERE x.contact_id = b.contact_id AND x.channel = b.channel
            AND x.obtained_at = b.obtained_at AND x.action = 'grant' AND x.topic_id IS NULL
            AND x.kind = b.kind AND x.source = b.source
            AND x.ends_at IS NOT DISTINCT FROM b.ends_at))
    ORDER BY b.contact_id
    RETURNING id, contact_id, channel, kind, source, obtained_at, ends_at
), summary AS (
    -- One new grant per contact: its pick is its kind's latest and, for a
    -- created contact, its best.
    SELECT l.contact_id, l.channel, l.contact_id >= $3::bigint AS created,
           l.obtained_at AS newest_at,
           CASE l.kind WHEN 'express' THEN p.pick END AS express,
           CASE l.kind WHEN 'implied_purchase' THEN p.pick END AS purchase,
           CASE l.kind WHEN 'implied_contract' THEN p.pick END AS contract,
           CASE l.kind WHEN 'implied_inquiry' THEN p.pick END AS inquiry,
           CASE l.kind WHEN 'implied_publication' THEN p.pick END AS publication,
           l.id AS best_id, l.kind AS best_kind, l.source AS best_source,
           l.obtained_at AS best_obtained_at, (p.pick).valid_until AS best_valid_until
    FROM ledger l
    CROSS JOIN LATERAL (
        SELECT (l.obtained_at, l.id, consent_valid_until(l.kind, l.obtained_at, l.ends_at),
                l.source)::consent_pick AS pick OFFSET 0) p
), summarised AS (
    INSERT INTO consent_current
        (contact_id, channel, newest_at, withdrawn, withdrawal, express, purchase, contract,
         inquiry, publication, best_id, best_kind, best_source, best_obtained_at,
         best_valid_until)
    SELECT n.contact_id, n.channel, n.newest_at, false, NULL, n.express, n.purchase,
           n.contract, n.inquiry, n.publication, n.best_id, n.best_kind, n.best_source,
           n.best_obtained_at, n.best_valid_until
    FROM summary n WHERE n.created  -- in contact order already: the ledger's ORDER BY
    RETURNING 1
), merged AS (
    INSERT INTO consent_current AS s
        (contact_id, channel, newest_at, withdrawn, withdrawal, express, purchase, contract,
         inquiry, publication, best_id, best_kind, best_source, best_obtained_at,
         best_valid_until)
    SELECT n.contact_id, n.channel, n.newest_at, false, NULL, n.express, n.purchase,
           n.contract, n.inquiry, n.publication, n.best_id, n.best_kind, n.best_source,
           n.best_obtained_at, n.best_valid_until
    FROM summary n WHERE NOT n.created
    ORDER BY n.contact_id
    ON CONFLICT (contact_id, channel) DO UPDATE SET
        newest_at = GREATEST(s.newest_at, EXCLUDED.newest_at),
        express = GREATEST(s.express, EXCLUDED.express),
        purchase = GREATEST(s.purchase, EXCLUDED.purchase),
        contract = GREATEST(s.contract, EXCLUDED.contract),
        inquiry = GREATEST(s.inquiry, EXCLUDED.inquiry),
        publication = GREATEST(s.publication, EXCLUDED.publication),
        (best_id, best_kind, best_source, best_obtained_at, best_valid_until) = (
            SELECT b.id, b.kind, b.source, b.obtained_at, b.valid_until
            FROM consent_best(s.withdrawal,
                              GREATEST(s.express, EXCLUDED.express),
                              GREATEST(s.purchase, EXCLUDED.purchase),
                              GREATEST(s.contract, EXCLUDED.contract),
                              GREATEST(s.inquiry, EXCLUDED.inquiry),
                              GREATEST(s.publication, EXCLUDED.publication), '-infinity') b)
    RETURNING 1
), listed AS (
    SELECT b.contact_id, b.created, listed.topic_id,
           'import ' || $1::bigint || ' line ' || b.line AS source
    FROM batch b CROSS JOIN LATERAL unnest(b.topics) AS listed (topic_id)
), subscribed AS (
    INSERT INTO contact_topics (contact_id, topic_id, subscribed, source)
    SELECT contact_id, topic_id, true, source FROM listed WHERE created
    RETURNING 1
), resubscribed AS (
    INSERT INTO contact_topics (contact_id, topic_id, subscribed, source)
    SELECT contact_id, topic_id, true, source FROM listed WHERE NOT created
    ON CONFLICT (contact_id, topic_id) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM ledger) AS consents,
       (SELECT count(*) FROM summarised) + (SELECT count(*) FROM merged) AS summarised,
       (SELECT count(*) FROM subscribed) + (SELECT count(*) FROM resubscribed) AS topics

-- name: import_update_contacts
-- The file's values, merged over all its lines, into the contacts that
-- existed: only where the file says something new, so re-importing the same
-- file writes nothing. Empty cells never erase data. Returns how many
-- contacts that existed before this import changed ($1: import_id_floor).
WITH changed AS (
    UPDATE contacts c
    SET name = coalesce(u.name, c.name),
        locale = coalesce(u.locale, c.locale),
        attributes = c.attributes || u.attributes,
        last_activity_at = greatest(c.last_activity_at, u.last_activity_at),
        tracking = coalesce(u.tracking, c.tracking),
        updated_at = now()
    FROM import_updates u
    WHERE c.id = u.id
      AND (c.name, c.locale, c.attributes, c.last_activity_at, c.tracking)
          IS DISTINCT FROM
          (coalesce(u.name, c.name), coalesce(u.locale, c.locale), c.attributes || u.attributes,
           greatest(c.last_activity_at, u.last_activity_at), coalesce(u.tracking, c.tracking))
    RETURNING c.id
)
SELECT count(*) FROM changed WHERE id <= $1

-- name: import_suppressed
-- How many of the imported addresses are suppressed: they are kept as
-- contacts but will never be mailed, and the operator should know. Those the
-- import created (ids above $1, import_id_floor), found from the suppressions
-- (a registry is usually far smaller than a file), and those that existed
-- (import_lock_found kept their hashes).
SELECT (SELECT count(DISTINCT c.id) FROM suppressions s
        JOIN contacts c ON c.email_hash = s.email_hash WHERE c.id > $1)
     + (SELECT count(*) FROM import_suppressed)

-- name: import_begin
-- Recorded first so that ledger evidence can name the import; committed
-- together with everything else, or not at all.
INSERT INTO imports (kind, file_name, file_sha256, rows_read, rows_valid, rows_rejected)
VALUES ($1, $2, $3, 0, 0, 0)
RETURNING id

-- name: import_finish
-- The file's hash is known once it has been read through ($6, NULL keeps it).
UPDATE imports SET rows_read = $2, rows_valid = $3, rows_rejected = $4, summary = $5,
                   file_sha256 = coalesce($6, file_sha256)
WHERE id = $1

-- name: suppress_create_staging
CREATE TEMPORARY TABLE import_suppressions (
    line       integer NOT NULL,
    email_hash bytea NOT NULL
) ON COMMIT DROP

-- name: suppress_insert
-- Keyed by address hash: works for addresses we have never seen as contacts
-- (a registry lists strangers too) and survives erasure.
INSERT INTO suppressions (email_hash, scope, channel, topic_id, reason, source, detail)
SELECT DISTINCT ON (email_hash) email_hash, $1, $2, $3, $4, $5,
       jsonb_build_object('import_id', $6::bigint, 'line', line)
FROM import_suppressions
ORDER BY email_hash, line
ON CONFLICT DO NOTHING

-- name: contact_by_email
SELECT id, email, name, locale, attributes, last_activity_at, tracking, erased_at, created_at,
       updated_at
FROM contacts WHERE email = $1

-- name: contact_ledger
SELECT l.id, l.channel, l.action, l.kind, t.slug AS topic, l.source, l.obtained_at, l.ends_at,
       l.evidence, l.recorded_at, l.obtained_date_only, l.ends_date_only
FROM consents l LEFT JOIN topics t ON t.id = l.topic_id
WHERE l.contact_id = $1
ORDER BY l.obtained_at, l.id

-- name: contact_topic_prefs
SELECT t.slug, ct.subscribed, ct.updated_at
FROM contact_topics ct JOIN topics t ON t.id = ct.topic_id
WHERE ct.contact_id = $1 ORDER BY t.slug

-- name: contact_channel_prefs
SELECT channel, enabled, updated_at FROM contact_channels WHERE contact_id = $1 ORDER BY channel

-- name: suppressions_for_hash
-- detail is the evidence: the delivery and, for bounces and complaints that came
-- back by mail or webhook, the stored inbound message (`mailer inbound`).
SELECT s.scope, s.channel, t.slug AS topic, s.reason, s.source, s.created_at, s.detail
FROM suppressions s LEFT JOIN topics t ON t.id = s.topic_id
WHERE s.email_hash = $1 ORDER BY s.created_at, s.id

-- name: contact_inbound_evidence
-- The inbound mail behind a person's suppressions and opt-outs (issue 16): the
-- DSN, feedback report or mailto unsubscribe each names in its evidence, and
-- every bounce, complaint or unsubscribe attributed to their deliveries (soft
-- bounces included: they count toward the soft-bounce rule). $1 the address,
-- $2 its hash (suppressions outlive the contact).
WITH person AS (
    SELECT id FROM contacts WHERE email = $1
)
SELECT m.id AS inbound_id, m.received_at, m.kind, m.source, m.sha256, m.detail, m.attributed_by
FROM inbound_messages m
WHERE m.id IN (
    SELECT (s.detail ->> 'inbound_id')::bigint FROM suppressions s
    WHERE s.email_hash = $2 AND s.detail ? 'inbound_id'
    UNION
    SELECT (l.evidence ->> 'inbound_id')::bigint FROM consents l JOIN person p ON p.id = l.contact_id
    WHERE l.action = 'withdraw' AND l.evidence ? 'inbound_id'
    UNION
    SELECT x.id FROM person p
    JOIN deliveries d ON d.contact_id = p.id
    JOIN inbound_messages x ON x.delivery_id = d.id
    WHERE x.kind IN ('dsn_hard', 'dsn_soft', 'complaint', 'unsubscribe')
)
ORDER BY m.received_at, m.id

-- name: summary_counts
SELECT (SELECT count(*) FROM contacts WHERE erased_at IS NULL) AS contacts,
       (SELECT count(*) FROM consents) AS ledger_rows,
       (SELECT count(*) FROM suppressions) AS suppressions,
       (SELECT count(*) FROM topics) AS topics

-- name: contact_rule_inputs
-- Everything eligibility.evaluate needs about one contact (contacts explain).
SELECT c.id, c.email, c.name, c.locale, c.attributes, c.last_activity_at, c.erased_at,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                    'id', l.id, 'channel', l.channel, 'action', l.action, 'kind', l.kind,
                    'source', l.source, 'obtained_at', l.obtained_at, 'ends_at', l.ends_at,
                    'topic_id', l.topic_id, 'obtained_date_only', l.obtained_date_only)
                    ORDER BY l.obtained_at, l.id)
                 FROM consents l WHERE l.contact_id = c.id), '[]') AS ledger,
       coalesce((SELECT jsonb_object_agg(ch.channel, ch.enabled)
                 FROM contact_channels ch WHERE ch.contact_id = c.id), '{}') AS channels,
       coalesce((SELECT jsonb_object_agg(ct.topic_id::text, ct.subscribed)
                 FROM contact_topics ct WHERE ct.contact_id = c.id), '{}') AS topics,
       coalesce((SELECT array_agg(t.slug) FROM contact_topics ct JOIN topics t ON t.id = ct.topic_id
                 WHERE ct.contact_id = c.id AND ct.subscribed), '{}') AS topic_slugs,
       coalesce((SELECT jsonb_agg(jsonb_build_object('scope', s.scope, 'reason', s.reason,
                    'channel', s.channel, 'topic_id', s.topic_id))
                 FROM suppressions s WHERE s.email_hash = c.email_hash), '[]') AS suppressions
FROM contacts c WHERE c.email = $1


-- name: contacts_search
-- The console's contact search, a page at a time (keyset on the address, so page 5,000 of
-- a million costs what page 1 does). An address prefix is a range on the unique index;
-- anything else is a name fragment, scanned until the page is full.
SELECT email, name, locale, last_activity_at
FROM contacts
WHERE email IS NOT NULL AND email > $3
  AND CASE WHEN $1 THEN email >= $2 AND email < $2 || chr(1114111)
           ELSE name ILIKE '%' || replace(replace(replace($2, '\', '\\'), '%', '\%'), '_', '\_') || '%'
      END
ORDER BY email
LIMIT $4

-- name: contacts_page
-- The API's contact list: keyset on the id ($1: the last id of the previous
-- page), never OFFSET, so page 1,000 costs what page 1 does.
SELECT id, email, name, locale, created_at
FROM contacts
WHERE id > $1 AND erased_at IS NULL
ORDER BY id
LIMIT $2
