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

-- name: import_session_settings
SELECT set_config('jit', 'off', true), set_config('work_mem', '64MB', true)

-- name: import_create_staging
-- One row per valid CSV line. Temporary and dropped at commit: a failed or
-- refused import leaves nothing behind.
CREATE TEMPORARY TABLE import_rows (
    line             integer NOT NULL,
    email            text NOT NULL,
    email_hash       bytea NOT NULL,
    name             text,
    locale           text,
    attributes       text NOT NULL,   -- JSON built by the reader; parsed once, in the merge
    last_activity_at timestamptz,
    tracking         boolean,
    channel          text NOT NULL,
    kind             text,
    source           text,
    obtained_at      timestamptz,
    ends_at          timestamptz,
    topics           text[] NOT NULL,
    -- consent_date / consent_ends were given without a time (migration 0007).
    obtained_date_only boolean NOT NULL,
    ends_date_only   boolean NOT NULL
) ON COMMIT DROP

-- name: import_index_staging
-- After COPY (indexing while loading is slower); the merge joins on email.
CREATE INDEX ON import_rows (email, line)

-- name: import_analyze_staging
-- Temporary tables are never auto-analyzed; without statistics the planner
-- guesses 1,000 rows and picks nested loops for a million.
ANALYZE import_rows

-- name: import_merge_rows
-- Duplicates in the file merge into one contact: the last non-empty value of
-- each field wins, attributes merge key by key (later lines win), last
-- activity is the latest seen.
CREATE TEMPORARY TABLE import_contacts ON COMMIT DROP AS
SELECT NULL::bigint AS id,
       email,
       email_hash,
       (array_agg(name ORDER BY line DESC) FILTER (WHERE name IS NOT NULL))[1] AS name,
       (array_agg(locale ORDER BY line DESC) FILTER (WHERE locale IS NOT NULL))[1] AS locale,
       jsonb_merge_agg(attributes::jsonb ORDER BY line) AS attributes,
       max(last_activity_at) AS last_activity_at,
       (array_agg(tracking ORDER BY line DESC) FILTER (WHERE tracking IS NOT NULL))[1] AS tracking
FROM import_rows
GROUP BY email, email_hash  -- the hash is a function of the address: one group per address

-- name: import_index_merged
CREATE UNIQUE INDEX ON import_contacts (email)

-- name: import_resolve_ids
-- Every merged address gets its contact id once, so later steps join the
-- small temp table instead of probing the 10 M-row contacts index again.
UPDATE import_contacts m SET id = c.id FROM contacts c WHERE c.email = m.email

-- name: import_lock_contacts
-- Whoever writes a contact's consents, topics or channels locks its row
-- first, as the tracker does (contact_lock): the ledger trigger locks the
-- contact's consent_current rows, and an import and a preference save that
-- took those and the topic rows in opposite orders deadlocked. In id order,
-- so two imports queue instead. (Contacts this import changed or created
-- are locked already; this takes the unchanged ones.)
SELECT count(*) FROM (
    SELECT 1 FROM contacts c JOIN import_contacts m ON m.id = c.id
    ORDER BY c.id
    FOR NO KEY UPDATE OF c
) locked

-- name: import_update_contacts
-- Existing contacts change only where the file says something new, so
-- re-importing the same file writes nothing. Empty cells never erase data.
UPDATE contacts c
SET name = coalesce(m.name, c.name),
    locale = coalesce(m.locale, c.locale),
    attributes = c.attributes || m.attributes,
    last_activity_at = greatest(c.last_activity_at, m.last_activity_at),
    tracking = coalesce(m.tracking, c.tracking),
    updated_at = now()
FROM import_contacts m
WHERE c.email = m.email
  AND (c.name, c.locale, c.attributes, c.last_activity_at, c.tracking)
      IS DISTINCT FROM
      (coalesce(m.name, c.name), coalesce(m.locale, c.locale), c.attributes || m.attributes,
       greatest(c.last_activity_at, m.last_activity_at), coalesce(m.tracking, c.tracking))

-- name: import_insert_contacts
INSERT INTO contacts (email, email_hash, name, locale, attributes, last_activity_at, tracking)
SELECT m.email, m.email_hash, m.name, coalesce(m.locale, $1), m.attributes, m.last_activity_at,
       coalesce(m.tracking, true)
FROM import_contacts m
WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.email = m.email)
ORDER BY m.email  -- the email index then fills in order, not at random
ON CONFLICT (email) DO NOTHING

-- name: import_insert_consents
-- The ledger gains a grant only when the file states one not yet recorded
-- (same contact, channel, kind, source, date and end). Re-imports add
-- nothing, and an old grant in a file never overrides a later withdrawal:
-- it is already in the ledger, so it is not appended again. Evidence names
-- the file and line (CASL s.13: proof of consent). Whether a date came with
-- a time is how it is printed, not which consent it is: a grant held at the
-- same instant is the same grant.
INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at, ends_at, evidence,
                      obtained_date_only, ends_date_only)
SELECT DISTINCT ON (c.id, r.channel, r.kind, r.source, r.obtained_at, r.ends_at)
       c.id, r.channel, 'grant', r.kind, r.source, r.obtained_at, r.ends_at,
       jsonb_build_object('import_id', $1::bigint, 'file', $2::text, 'line', r.line),
       r.obtained_date_only, r.ends_date_only
FROM import_rows r
JOIN import_contacts c ON c.email = r.email
WHERE r.kind IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM consents x
      WHERE x.contact_id = c.id AND x.channel = r.channel AND x.obtained_at = r.obtained_at
        AND x.action = 'grant' AND x.topic_id IS NULL AND x.kind = r.kind
        AND x.source = r.source AND x.ends_at IS NOT DISTINCT FROM r.ends_at)
ORDER BY c.id, r.channel, r.kind, r.source, r.obtained_at, r.ends_at, r.line

-- name: import_insert_topics
-- Subscribes contacts to the topics the file lists. A topic the person opted
-- out of stays opted out: an import never overrides a person's own choice.
-- The source names the import and line; the ledger keeps the person's own
-- preference changes (preference centre, unsubscribe).
INSERT INTO contact_topics (contact_id, topic_id, subscribed, source)
SELECT c.id, t.id, true, 'import ' || $1::bigint || ' line ' || min(r.line)
FROM import_rows r
CROSS JOIN LATERAL unnest(r.topics) AS listed (slug)
JOIN topics t ON t.slug = listed.slug
JOIN import_contacts c ON c.email = r.email
GROUP BY c.id, t.id
ON CONFLICT (contact_id, topic_id) DO NOTHING

-- name: import_suppressed_count
-- How many of the imported addresses are suppressed: they are kept as
-- contacts but will never be mailed, and the operator should know.
SELECT count(*) FROM import_contacts m
WHERE EXISTS (SELECT 1 FROM suppressions s WHERE s.email_hash = m.email_hash)

-- name: import_begin
-- Recorded first so that ledger evidence can name the import; committed
-- together with everything else, or not at all.
INSERT INTO imports (kind, file_name, file_sha256, rows_read, rows_valid, rows_rejected)
VALUES ($1, $2, $3, 0, 0, 0)
RETURNING id

-- name: import_finish
UPDATE imports SET rows_read = $2, rows_valid = $3, rows_rejected = $4, summary = $5
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

-- name: summary_counts
SELECT (SELECT count(*) FROM contacts WHERE erased_at IS NULL) AS contacts,
       (SELECT count(*) FROM consents) AS ledger_rows,
       (SELECT count(*) FROM suppressions) AS suppressions,
       (SELECT count(*) FROM topics) AS topics

-- name: contact_rule_inputs
-- Everything consent.evaluate needs about one contact (contacts explain).
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

