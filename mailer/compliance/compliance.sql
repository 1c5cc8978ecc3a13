-- List hygiene, data subject requests and the auditor's export (issue 8),
-- run by mailer/compliance/store.py. Markers such as :flags are
-- replaced by the store with another named query of this file (never with
-- operator text), so a count and the run it predicts share one definition.

-- ---------------------------------------------------------------- hygiene

-- name: privacy_session_settings
-- One pass over every contact with per-contact probes into the ledger,
-- deliveries and events: JIT costs more than it saves, and the purge's
-- joins want more than 4 MB.
SELECT set_config('jit', 'off', true), set_config('work_mem', '256MB', true)

-- name: hygiene_flags
-- Per live contact, what the hygiene rules look at. $1 activity cutoff
-- (now - N months), $2 now, $3 how many recent campaigns make "unengaged".
-- Active = anything the person did since the cutoff: the activity date the
-- operator imported, a ledger row (purchase, inquiry, opt-in, opt-out,
-- preference change), a human open or click. A contact we have known for
-- less than N months is never "inactive": we lack the evidence.
-- Express consent counts on any channel when no later withdrawal on that
-- channel cancels it (CASL s.10(1): express lasts until withdrawn).
-- `purge` is the purge rule itself; a contact with a message in flight
-- (`sending`) waits for the next purge rather than race the send engine.
SELECT c.id, c.email_hash, f.inactive, f.express, f.bounced, f.sending,
       coalesce(imp.any_implied, false) AS any_implied,
       coalesce(imp.valid_implied, false) AS valid_implied,
       coalesce(eng.sent >= $3::integer AND eng.engaged = 0, false) AS unengaged,
       f.inactive AND NOT f.express AND NOT f.sending AS purge
FROM contacts c
CROSS JOIN LATERAL (
    SELECT
        c.created_at < $1::timestamptz
        AND (c.last_activity_at IS NULL OR c.last_activity_at < $1)
        AND NOT EXISTS (SELECT 1 FROM consents l
                        WHERE l.contact_id = c.id AND l.obtained_at >= $1)
        AND NOT EXISTS (SELECT 1 FROM deliveries d JOIN events e ON e.delivery_id = d.id
                        WHERE d.contact_id = c.id AND e.occurred_at >= $1 AND NOT e.machine)
            AS inactive,
        EXISTS (SELECT 1 FROM consents g
                WHERE g.contact_id = c.id AND g.topic_id IS NULL AND g.action = 'grant'
                  AND g.kind = 'express' AND g.obtained_at <= $2::timestamptz
                  AND NOT EXISTS (SELECT 1 FROM consents w
                                  WHERE w.contact_id = g.contact_id AND w.channel = g.channel
                                    AND w.topic_id IS NULL AND w.action = 'withdraw'
                                    AND w.obtained_at <= $2
                                    AND (w.obtained_at, w.id) > (g.obtained_at, g.id)))
            AS express,
        EXISTS (SELECT 1 FROM suppressions s
                WHERE s.email_hash = c.email_hash AND s.reason = 'hard_bounce') AS bounced,
        EXISTS (SELECT 1 FROM deliveries d WHERE d.contact_id = c.id AND d.status = 'sending')
            AS sending
) f
LEFT JOIN LATERAL (
    -- Implied email consents still standing (latest grant per kind after the
    -- last withdrawal), and whether one is valid now: the audience's rule.
    SELECT true AS any_implied,
           bool_or(k.valid_until IS NULL OR $2 < k.valid_until) AS valid_implied
    FROM (SELECT DISTINCT ON (g.kind)
                 CASE g.kind
                     WHEN 'implied_purchase' THEN g.obtained_at + interval '24 months'  -- CASL s.10(10)(a)
                     WHEN 'implied_contract' THEN g.ends_at + interval '24 months'      -- after it ends
                     WHEN 'implied_inquiry' THEN g.obtained_at + interval '6 months'    -- CASL s.10(10)(c)
                     WHEN 'implied_publication' THEN g.ends_at                          -- while relevant
                 END AS valid_until
          FROM consents g
          WHERE g.contact_id = c.id AND g.channel = 'email' AND g.topic_id IS NULL
            AND g.action = 'grant' AND g.kind <> 'express' AND g.obtained_at <= $2
            AND NOT EXISTS (SELECT 1 FROM consents w
                            WHERE w.contact_id = c.id AND w.channel = 'email'
                              AND w.topic_id IS NULL AND w.action = 'withdraw'
                              AND w.obtained_at <= $2
                              AND (w.obtained_at, w.id) > (g.obtained_at, g.id))
          ORDER BY g.kind, g.obtained_at DESC, g.id DESC) AS k
    HAVING count(*) > 0
) imp ON true
CROSS JOIN LATERAL (
    -- "Never opened in N campaigns": the last N messages sent, none opened or
    -- clicked by a person (privacy proxies and link scanners do not count).
    SELECT count(*) AS sent,
           count(*) FILTER (WHERE EXISTS (SELECT 1 FROM events e
                                          WHERE e.delivery_id = r.id AND NOT e.machine))
               AS engaged
    FROM (SELECT d.id FROM deliveries d
          WHERE d.contact_id = c.id AND d.status = 'sent'
          ORDER BY d.sent_at DESC LIMIT $3) AS r
) eng
WHERE c.erased_at IS NULL

-- name: hygiene_report
SELECT count(*) AS contacts,
       count(*) FILTER (WHERE inactive) AS inactive,
       count(*) FILTER (WHERE NOT express) AS without_express,
       count(*) FILTER (WHERE purge) AS purge_candidates,
       count(*) FILTER (WHERE any_implied AND NOT valid_implied AND NOT express)
           AS only_expired_implied,
       count(*) FILTER (WHERE bounced) AS hard_bounced,
       count(*) FILTER (WHERE unengaged) AS unengaged,
       count(*) FILTER (WHERE sending) AS in_flight,
       (SELECT count(*) FROM contacts WHERE erased_at IS NOT NULL) AS erased
FROM (:flags) AS flags

-- name: hygiene_suppression_sources
-- Bounced and complained addresses by where the news came from: the first
-- hop's reply (smtp), a DSN, soft bounces counted, a feedback report, an ESP.
SELECT reason, source, count(*) AS n FROM suppressions
WHERE reason IN ('hard_bounce', 'complaint')
GROUP BY reason, source ORDER BY reason, source

-- name: hygiene_inbound_evidence
-- The latest suppressions made from inbound mail, with the message that made
-- each (issue 16): what the operator checks before cleaning a list. $1 how many.
-- The latest first, then their addresses: contacts.email_hash has no index
-- (every import paid a random-key insert per contact for it), so the few hashes
-- meet the contacts in one hashed pass.
WITH latest AS MATERIALIZED (
    SELECT s.id, s.reason, s.created_at, s.email_hash,
           m.id AS inbound_id, m.received_at, m.kind, m.source, m.sha256, m.detail,
           m.attributed_by
    FROM suppressions s
    JOIN inbound_messages m ON m.id = (s.detail ->> 'inbound_id')::bigint
    WHERE s.detail ? 'inbound_id'
    ORDER BY s.created_at DESC, s.id DESC
    LIMIT $1
)
SELECT l.reason, l.created_at, c.email, l.inbound_id, l.received_at, l.kind, l.source,
       l.sha256, l.detail, l.attributed_by
FROM latest l
LEFT JOIN contacts c ON c.email_hash = l.email_hash
ORDER BY l.created_at DESC, l.id DESC

-- name: hygiene_candidates
-- What a purge erases; the dry run counts exactly this.
SELECT id, email_hash FROM (:flags) AS flags WHERE purge

-- name: hygiene_candidate_count
SELECT count(*) FROM (:candidates) AS candidates

-- ---------------------------------------------------------------- erasure

-- name: erase_target_by_email
-- A data subject request names one address.
SELECT id, email_hash FROM contacts WHERE email = $1 AND erased_at IS NULL

-- name: erase_targets_create
-- The contacts one erasure covers, with their address hash (the contact row
-- loses it; the suppression keeps it). Dropped at commit.
CREATE TEMPORARY TABLE erase_targets ON COMMIT DROP AS :targets

-- name: erase_targets_analyze
-- A purge may cover a million contacts; temporary tables are never auto-analyzed.
ANALYZE erase_targets

-- name: erase_ledger_rewrite
-- The ledger's append-only trigger lets exactly this transaction scrub
-- evidence (GDPR art. 17; 0001_foundation.sql).
SELECT set_config('mailer.ledger_rewrite', 'erasure', true)

-- name: erase_targets_sending
-- A message handed to SMTP while we erase would be archived with the
-- address after it is gone: such an erasure is refused, to be retried.
SELECT (SELECT count(*) FROM deliveries d JOIN erase_targets t ON t.id = d.contact_id
        WHERE d.status = 'sending')
     + (SELECT count(*) FROM transactional_messages m JOIN erase_targets t ON t.id = m.contact_id
        WHERE m.status = 'sending')

-- name: erase_contacts
-- Anonymised in place, never deleted: every reference (ledger, deliveries,
-- reports) stays whole and report totals stay true. Locale and tracking
-- choice are kept: they identify no one and keep per-locale figures whole.
UPDATE contacts c
SET email = NULL, email_hash = NULL, name = NULL, attributes = '{}', last_activity_at = NULL,
    erased_at = now(), updated_at = now()
FROM erase_targets t
WHERE c.id = t.id AND c.erased_at IS NULL

-- name: erase_suppress
-- The hashed address stays suppressed everywhere, so a re-import cannot
-- bring the person back silently. $3: hashes of requests for addresses we
-- hold no contact for (the request is honoured all the same).
INSERT INTO suppressions (email_hash, scope, reason, source, detail)
SELECT h.email_hash, 'global', 'erasure', $1, $2::jsonb
FROM (SELECT email_hash FROM erase_targets
      UNION
      SELECT unnest($3::bytea[])) AS h
WHERE h.email_hash IS NOT NULL
ON CONFLICT DO NOTHING

-- name: erase_deliveries_skip
-- Unsent rows can never go (there is no address left); their state says why.
-- Claimed rows too: a worker holds them but has not started them, and its
-- start (send.sql: start_sending) takes only rows still `claimed`, so once
-- this commits they are never started; a start that locked a row first makes
-- it `sending`, and erase_targets_sending then refuses the erasure.
UPDATE deliveries d
SET status = 'skipped', skip_reason = 'erased', lease_until = NULL, worker = NULL,
    updated_at = now()
FROM erase_targets t
WHERE d.contact_id = t.id AND d.status IN ('queued', 'deferred', 'claimed')

-- name: erase_deliveries_scrub
-- SMTP replies often quote the recipient ("550 5.1.1 <a@b>: no such user");
-- the code stays, so bounce figures stay.
UPDATE deliveries d SET smtp_reply = NULL, updated_at = now()
FROM erase_targets t
WHERE d.contact_id = t.id AND d.smtp_reply IS NOT NULL

-- name: erase_consents
-- Evidence keeps only the keys in $1 (which import line, which delivery and
-- campaign, which method: what reports count by); IP, user agent and free
-- text go. A free-text opt-out reason becomes "(erased)" so opt-out counts
-- by "gave a reason" stay. Kind, source and dates stay: they identify no one.
UPDATE consents l
SET evidence = CASE WHEN jsonb_typeof(l.evidence) = 'object' THEN
                   (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}')
                    FROM jsonb_each(l.evidence) AS e WHERE e.key = ANY($1::text[]))
                   || CASE WHEN l.evidence ->> 'reason' IS NOT NULL
                           THEN '{"reason": "(erased)"}'::jsonb ELSE '{}' END
               ELSE '{}' END || '{"erased": true}'::jsonb
FROM erase_targets t
WHERE l.contact_id = t.id AND NOT coalesce(l.evidence ? 'erased', false)

-- name: erase_events
-- Opens and clicks stay (report totals), without user agent and IP prefix.
-- The fold's xact column is not touched, so reports do not count them twice.
UPDATE events e SET user_agent = NULL, ip_prefix = NULL
FROM deliveries d JOIN erase_targets t ON t.id = d.contact_id
WHERE e.delivery_id = d.id AND (e.user_agent IS NOT NULL OR e.ip_prefix IS NOT NULL)

-- name: erase_archive
-- The archive keeps the template version, the SHA-256 taken at send time,
-- the size, the Message-ID and the Date: proof that this message existed
-- and what it was. The render inputs (address, name, attributes, signed
-- links naming the delivery) go, so it can no longer be re-rendered.
UPDATE archive a
SET render_inputs = jsonb_build_object(
        'erased_at', now(),
        'message_id', a.render_inputs #> '{envelope,message_id}',
        'date', a.render_inputs #> '{envelope,date}')
FROM deliveries d JOIN erase_targets t ON t.id = d.contact_id
WHERE a.delivery_id = d.id AND NOT a.render_inputs ? 'erased_at'

-- name: erase_inbound
-- Inbound mail about the erased (issue 16): messages attributed to their
-- deliveries, and processed messages attributed to none (unmatched, an
-- auto-reply) whose raw bytes name one of their addresses, found by hashing
-- every address the raw text contains ($2: hashes of requests for addresses
-- we hold no contact for). The raw message goes (a DSN quotes the address and
-- the original message), so do the envelope sender (a mailto unsubscribe's is
-- the person) and every free-text field; what stays is its SHA-256, when and
-- from where it came, its kind and delivery, and the structural fields in $1
-- (status, action, feedback type): the evidence behind the hashed
-- suppression, naming no one. Pending messages are left to the processor,
-- which scrubs those about erased contacts as it processes them.
WITH hashes AS (
    SELECT email_hash FROM erase_targets WHERE email_hash IS NOT NULL
    UNION
    SELECT unnest($2::bytea[])
), hit AS (
    SELECT m.id
    FROM erase_targets t
    JOIN deliveries d ON d.contact_id = t.id
    JOIN inbound_messages m ON m.delivery_id = d.id
    WHERE m.state = 'processed'
    UNION
    -- Mail about her transactional notices (inbound_messages.transactional_id).
    SELECT m.id
    FROM erase_targets t
    JOIN transactional_messages x ON x.contact_id = t.id
    JOIN inbound_messages m ON m.transactional_id = x.id
    WHERE m.state = 'processed'
    UNION
    SELECT m.id
    FROM inbound_messages m
    CROSS JOIN LATERAL (
        SELECT DISTINCT (regexp_matches(lower(encode(m.raw, 'escape')),
                                        '[a-z0-9._%+=-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+', 'g'))[1]
                        AS address
    ) a
    JOIN hashes h ON h.email_hash = sha256(convert_to(a.address, 'UTF8'))
    WHERE m.delivery_id IS NULL AND m.state = 'processed' AND octet_length(m.raw) > 0
)
UPDATE inbound_messages m
SET raw = ''::bytea,
    mail_from = NULL,
    rcpt_to = ARRAY(SELECT r FROM unnest(m.rcpt_to) AS r
                    WHERE sha256(convert_to(lower(r), 'UTF8')) NOT IN (SELECT email_hash
                                                                       FROM hashes)),
    peer = CASE WHEN strpos(m.peer, '@') > 0 THEN NULL ELSE m.peer END,
    detail = (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}')
              FROM jsonb_each(m.detail) AS e WHERE e.key = ANY($1::text[]))
             || '{"erased": true}'::jsonb
FROM hit
WHERE m.id = hit.id AND NOT m.detail ? 'erased'

-- name: erase_bounces
-- A late bounce's diagnostic quotes the recipient like an SMTP reply does;
-- its status stays (the report counts by it).
UPDATE bounces b SET diagnostic = NULL
FROM erase_targets t
WHERE b.contact_id = t.id AND b.diagnostic IS NOT NULL

-- name: erase_suppression_detail
-- Suppressions outlive the erasure (keyed by hash); a bounce's evidence in
-- them keeps the delivery, the inbound message and the status, not the
-- diagnostic text that quotes the address.
UPDATE suppressions s SET detail = s.detail - 'diagnostic'
WHERE s.email_hash IN (SELECT email_hash FROM erase_targets WHERE email_hash IS NOT NULL
                       UNION SELECT unnest($1::bytea[]))
  AND s.detail ? 'diagnostic'

-- name: erase_rejects
-- The console's rejects files (console_uploads.rejects_gz, gzip CSV of rows never
-- imported) cannot be searched in SQL: the sha256 of every address in each is kept beside
-- it, and a file holding an erased person's is dropped whole (its other rows are to be
-- fixed and uploaded again, and can be taken from the source file), with the date shown.
-- Files kept before their hashes were (migration 0022: rejects_hashes NULL beside a
-- file) cannot be told apart: any erasure drops them all (they are 30 days old at most).
UPDATE console_uploads u
SET rejects_gz = NULL, rejects_hashes = NULL, rejects_erased_at = now()
WHERE (u.rejects_hashes IS NULL AND u.rejects_gz IS NOT NULL)
   OR (u.rejects_hashes IS NOT NULL
       AND u.rejects_hashes && (SELECT coalesce(array_agg(h), '{}') FROM (
               SELECT email_hash AS h FROM erase_targets WHERE email_hash IS NOT NULL
               UNION SELECT unnest($1::bytea[])) AS erased))

-- name: erase_transactional
-- Transactional messages: an unsent one can never go (no address left), its
-- state says why; every one loses the caller's values (names, orders, VINs),
-- the SMTP reply (it may quote the address) and its render inputs, keeping
-- the template, basis, state, dates, Message-ID and SHA-256 (proof it was
-- sent and what it was), as the archive above does.
UPDATE transactional_messages m
SET status = CASE WHEN m.status IN ('queued', 'deferred') THEN 'skipped' ELSE m.status END,
    skip_reason = CASE WHEN m.status IN ('queued', 'deferred') THEN 'erased'
                       ELSE m.skip_reason END,
    data = '{}', smtp_reply = NULL,
    render_inputs = CASE WHEN m.render_inputs IS NULL THEN NULL
                         ELSE jsonb_build_object(
                             'erased_at', now(),
                             'message_id', m.render_inputs #> '{envelope,message_id}',
                             'date', m.render_inputs #> '{envelope,date}') END,
    updated_at = now()
FROM erase_targets t
WHERE m.contact_id = t.id
  AND (m.data <> '{}'::jsonb OR m.smtp_reply IS NOT NULL
       OR m.status IN ('queued', 'deferred')
       OR (m.render_inputs IS NOT NULL AND NOT m.render_inputs ? 'erased_at'))

-- name: privacy_log_insert
INSERT INTO privacy_log (action, rule, contacts, details, subject_hash, os_user)
VALUES ($1, $2, $3, $4::jsonb, $5, $6)
RETURNING id, db_user, performed_at

-- name: privacy_log_recent
SELECT id, action, rule, contacts, details, db_user, os_user, performed_at
FROM privacy_log ORDER BY id DESC LIMIT $1

-- ---------------------------------------------------------------- data subject export

-- name: contact_export
-- Everything held about one address: every column of every row (to_jsonb of
-- the row, so a column a later migration adds is exported without editing
-- this query). $1 the normalised address, $2 its hash (suppressions and the
-- privacy log are keyed by it and outlive the contact).
WITH person AS MATERIALIZED (
    SELECT * FROM contacts WHERE email = $1
), mail AS MATERIALIZED (
    SELECT d.* FROM deliveries d JOIN person p ON p.id = d.contact_id
)
SELECT jsonb_build_object(
    'contacts', coalesce((SELECT jsonb_agg(to_jsonb(p) ORDER BY p.id) FROM person p), '[]'),
    'consents', coalesce((SELECT jsonb_agg(to_jsonb(l) ORDER BY l.obtained_at, l.id)
                          FROM consents l JOIN person p ON p.id = l.contact_id), '[]'),
    'contact_topics', coalesce((SELECT jsonb_agg(to_jsonb(ct) ORDER BY ct.topic_id)
                                FROM contact_topics ct JOIN person p ON p.id = ct.contact_id),
                               '[]'),
    'contact_channels', coalesce((SELECT jsonb_agg(to_jsonb(ch) ORDER BY ch.channel)
                                  FROM contact_channels ch JOIN person p ON p.id = ch.contact_id),
                                 '[]'),
    'suppressions', coalesce((SELECT jsonb_agg(to_jsonb(s) ORDER BY s.id)
                              FROM suppressions s WHERE s.email_hash = $2), '[]'),
    'deliveries', coalesce((SELECT jsonb_agg(to_jsonb(d) ORDER BY d.id) FROM mail d), '[]'),
    'events', coalesce((SELECT jsonb_agg(to_jsonb(e) ORDER BY e.occurred_at, e.delivery_id)
                        FROM events e JOIN mail d ON d.id = e.delivery_id), '[]'),
    'archive', coalesce((SELECT jsonb_agg(to_jsonb(a) ORDER BY a.delivery_id)
                         FROM archive a JOIN mail d ON d.id = a.delivery_id), '[]'),
    'transactional_messages', coalesce((SELECT jsonb_agg(to_jsonb(m) ORDER BY m.id)
                                        FROM transactional_messages m
                                        JOIN person p ON p.id = m.contact_id), '[]'),
    'privacy_log', coalesce((SELECT jsonb_agg(to_jsonb(g) ORDER BY g.id)
                             FROM privacy_log g WHERE g.subject_hash = $2), '[]'),
    -- Bounces, complaints and mailto unsubscribes about the person (issue 16): those
    -- attributed to their messages and those their suppressions name; the raw message
    -- as text (bytes outside ASCII escaped), so the person can read it.
    'inbound_messages', coalesce((
        SELECT jsonb_agg(to_jsonb(m) - 'raw' || jsonb_build_object('raw', encode(m.raw, 'escape'))
                         ORDER BY m.id)
        FROM inbound_messages m
        WHERE m.delivery_id IN (SELECT id FROM mail)
           OR m.transactional_id IN (SELECT x.id FROM transactional_messages x
                                     JOIN person p ON p.id = x.contact_id)
           OR m.id IN (SELECT (s.detail ->> 'inbound_id')::bigint FROM suppressions s
                       WHERE s.email_hash = $2 AND s.detail ? 'inbound_id')), '[]'),
    -- Names for the ids above, so the person can read the export.
    'topics', coalesce((SELECT jsonb_agg(jsonb_build_object('id', t.id, 'slug', t.slug,
                                                            'name', t.name) ORDER BY t.id)
                        FROM topics t), '[]'),
    'campaigns', coalesce((SELECT jsonb_agg(jsonb_build_object('id', k.id, 'slug', k.slug,
                                                               'name', k.name) ORDER BY k.id)
                           FROM campaigns k WHERE k.id IN (SELECT campaign_id FROM mail)), '[]')
)

-- ---------------------------------------------------------------- auditor export

-- name: audit_contact_id
SELECT id FROM contacts WHERE email = $1

-- name: audit_rows
-- One row per delivery of a campaign ($1) and/or of a contact ($2); NULL:
-- no filter on it. The consent is the one frozen on the delivery (what the
-- engine acted on), with its ledger row's end and evidence, and the first
-- withdrawal on the channel after it (the consent stops there). Without a
-- frozen consent (CAN-SPAM's opt-out model) a withdrawal counts from the
-- freeze on. The message's own opt-outs carry their processing time.
SELECT d.id AS delivery_id, d.campaign_id, p.slug AS campaign, p.policy, p.channel, d.status,
       d.skip_reason, d.sent_at, d.message_id, c.email, c.erased_at,
       d.consent_id, d.consent_kind, d.consent_source, d.consent_obtained_at,
       l.ends_at AS consent_ends_at, l.evidence AS consent_evidence,
       (SELECT min(w.obtained_at) FROM consents w
        WHERE w.contact_id = d.contact_id AND w.channel = p.channel AND w.topic_id IS NULL
          AND w.action = 'withdraw'
          AND CASE WHEN l.id IS NULL THEN w.obtained_at > d.created_at
                   ELSE (w.obtained_at, w.id) > (l.obtained_at, l.id) END) AS withdrawn_at,
       a.sha256, a.render_inputs, tv.name AS template, tv.files,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                    'channel', u.channel, 'topic_id', u.topic_id,
                    'method', coalesce(u.evidence ->> 'method', u.source),
                    'requested_at', u.obtained_at, 'recorded_at', u.recorded_at,
                    'inbound_id', (u.evidence ->> 'inbound_id')::bigint)
                    ORDER BY u.obtained_at, u.id)
                 FROM consents u
                 WHERE u.contact_id = d.contact_id AND u.action = 'withdraw'
                   AND u.evidence ->> 'delivery_id' = d.id::text), '[]') AS optouts,
       -- The bounces, complaints and mailto unsubscribes that came back about this
       -- message (issue 16), with the hash of each as stored.
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                    'inbound_id', m.id, 'received_at', m.received_at, 'kind', m.kind,
                    'source', m.source, 'sha256', encode(m.sha256, 'hex'), 'detail', m.detail,
                    'attributed_by', m.attributed_by)
                    ORDER BY m.id)
                 FROM inbound_messages m WHERE m.delivery_id = d.id), '[]') AS inbound
FROM deliveries d
JOIN campaigns p ON p.id = d.campaign_id
JOIN contacts c ON c.id = d.contact_id
LEFT JOIN consents l ON l.id = d.consent_id
LEFT JOIN archive a ON a.delivery_id = d.id
LEFT JOIN template_versions tv ON tv.id = a.template_version_id
WHERE ($1::bigint IS NULL OR d.campaign_id = $1) AND ($2::bigint IS NULL OR d.contact_id = $2)
  -- Every state, asked of the index that holds it (see archive_for_campaign).
  AND (d.status IN ('queued', 'deferred') OR d.status NOT IN ('queued', 'deferred'))
ORDER BY d.id

-- ---------------------------------------------------------------- unsubscribe SLA

-- name: unsubscribe_sla
-- Proof that every opt-out took effect before the next send: for each
-- withdraw row (channel, or topic) followed by a delivery to that person on
-- that channel (or topic), no message went after the opt-out was recorded,
-- unless the person consented again in between. $1 a campaign (its
-- recipients' opt-outs and its deliveries) or NULL for everything.
-- Processing time = recorded - requested (CASL s.11(3): 10 business days;
-- Gmail/Yahoo 2024: 2 days; the tracker writes both in one transaction).
WITH optouts AS (
    SELECT w.id, w.contact_id, w.channel, w.topic_id, w.obtained_at, w.recorded_at,
           greatest(extract(epoch FROM w.recorded_at - w.obtained_at), 0) AS processing_s
    FROM consents w
    WHERE w.action = 'withdraw'
      AND ($1::bigint IS NULL OR EXISTS (SELECT 1 FROM deliveries x
                                         WHERE x.contact_id = w.contact_id AND x.campaign_id = $1))
), later AS (
    SELECT o.id AS optout_id, d.id AS delivery_id, d.status,
           d.status = 'sent' AND d.sent_at > o.recorded_at
           AND NOT EXISTS (SELECT 1 FROM consents g
                           WHERE g.contact_id = o.contact_id AND g.action = 'grant'
                             AND g.obtained_at > o.obtained_at AND g.obtained_at <= d.sent_at
                             AND CASE WHEN o.topic_id IS NULL
                                      THEN g.topic_id IS NULL AND g.channel = o.channel
                                      ELSE g.topic_id = o.topic_id END) AS violation
    FROM optouts o
    JOIN deliveries d ON d.contact_id = o.contact_id
    JOIN campaigns p ON p.id = d.campaign_id
    WHERE ($1::bigint IS NULL OR d.campaign_id = $1)
      AND CASE WHEN o.topic_id IS NULL THEN p.channel = o.channel ELSE p.topic_id = o.topic_id END
      AND coalesce(d.sent_at, d.updated_at) > o.obtained_at
)
SELECT count(DISTINCT o.id) AS optouts,
       count(DISTINCT o.id) FILTER (WHERE l.delivery_id IS NOT NULL) AS followed,
       count(DISTINCT l.delivery_id) FILTER (WHERE l.status <> 'sent') AS held_back,
       count(DISTINCT l.delivery_id) FILTER (WHERE l.violation) AS violations,
       coalesce(max(o.processing_s), 0)::float8 AS max_processing_s,
       coalesce((array_agg(DISTINCT l.delivery_id) FILTER (WHERE l.violation))[1:20], '{}')
           AS violating
FROM optouts o LEFT JOIN later l ON l.optout_id = o.id

-- ---------------------------------------------------------------- archive

-- name: archive_by_delivery
SELECT a.delivery_id, a.render_inputs, a.sha256, a.size_bytes, a.created_at,
       tv.name AS template, tv.files, d.campaign_id, d.status, d.sent_at, d.message_id
FROM archive a
JOIN template_versions tv ON tv.id = a.template_version_id
JOIN deliveries d ON d.id = a.delivery_id
WHERE a.delivery_id = $1

-- name: archive_for_campaign
-- Every sent message of a campaign with the consent that justified it, as
-- frozen on the delivery, and the ledger row's evidence (what an auditor
-- asks: "show me the consent and the message").
SELECT a.delivery_id, a.render_inputs, a.sha256, tv.name AS template, tv.files,
       d.sent_at, d.message_id, d.consent_kind, d.consent_source, d.consent_obtained_at,
       l.evidence AS consent_evidence, c.email
FROM deliveries d
JOIN archive a ON a.delivery_id = d.id
JOIN template_versions tv ON tv.id = a.template_version_id
JOIN contacts c ON c.id = d.contact_id
LEFT JOIN consents l ON l.id = d.consent_id
WHERE d.campaign_id = $1
  -- Every state, asked of the index that holds it (migration 0006: rows
  -- still to send in the claimable index, the others in the status index);
  -- without it no index covers a whole campaign and deliveries is read whole.
  AND (d.status IN ('queued', 'deferred') OR d.status NOT IN ('queued', 'deferred'))
ORDER BY d.id

-- name: operator_log_insert
-- One write by an API key or a console operator, in the transaction of the
-- write itself (the log and the change commit together, or neither).
INSERT INTO operator_log (actor_kind, actor_id, action, object_kind, object_id, detail)
VALUES ($1, $2, $3, $4, $5, $6::jsonb)
RETURNING id, at

-- name: operator_log_page
-- Newest first, by keyset on the id (no OFFSET: the log only grows); $1 the
-- id to go below (NULL: from the newest), $2 page size, $3/$4 an optional
-- object filter.
SELECT id, at, actor_kind, actor_id, action, object_kind, object_id, detail
FROM operator_log
WHERE ($1::bigint IS NULL OR id < $1)
  AND ($3::text IS NULL OR object_kind = $3)
  AND ($4::text IS NULL OR object_id = $4)
ORDER BY id DESC
LIMIT $2
