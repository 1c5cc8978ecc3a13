-- The ledger's current state per contact and channel, kept as rows arrive,
-- so an audience reads one row per contact instead of grouping and ranking
-- the whole ledger at every count and launch (at 1 M contacts that grouping
-- and ranking was half of the audience's time).
--
-- A row summarises every ledger row of its contact and channel (the rows
-- consent_latest reads: channel grants and withdrawals, not topic rows) and
-- is the ledger's answer for any send time from `newest_at` on. For an
-- earlier send time (an audience asked about the past, or rows dated ahead)
-- the audience reads the ledger itself for that contact; the hypothesis test
-- in tests/test_audience_sql.py covers both ways against consent.evaluate.

CREATE TABLE consent_current (
    contact_id       bigint NOT NULL,
    channel          text NOT NULL,
    -- The latest obtained_at summarised.
    newest_at        timestamptz NOT NULL,
    -- A withdrawal is on record (a later grant may have renewed consent).
    withdrawn        boolean NOT NULL,
    -- The latest withdrawal and the latest row of each kind, as consent_latest
    -- gives them. "Latest" is a maximum, so rows arriving later merge in with
    -- GREATEST whatever their order or their transaction.
    withdrawal       consent_pick,
    express          consent_pick,
    purchase         consent_pick,
    contract         consent_pick,
    inquiry          consent_pick,
    publication      consent_pick,
    -- The best grant standing (none withdrawn after it), as the audience cites
    -- it; NULL when none stands. Which grant is best does not depend on the
    -- send time, only whether it is still valid does (the audience compares
    -- best_valid_until): express and grants without an end are always valid
    -- and rank first; among the others the latest end ranks first, so when
    -- the best has lapsed every other has too.
    best_id          bigint,
    best_kind        text,
    best_source      text,
    best_obtained_at timestamptz,
    best_valid_until timestamptz,
    PRIMARY KEY (contact_id, channel)
);
-- The audience's question "who has rows dated after the send time?" (those
-- are answered from the ledger): usually nobody, found without a scan.
CREATE INDEX consent_current_newest_idx ON consent_current (channel, newest_at);

-- The best standing grant among a contact's latest rows, ranked at `at`
-- (consent_choice). At '-infinity' every grant ranks as valid: the ranking
-- that picks the same grant as at any send time (see best_id above).
CREATE FUNCTION consent_best(withdrawal consent_pick, express consent_pick,
                             purchase consent_pick, contract consent_pick,
                             inquiry consent_pick, publication consent_pick,
                             at timestamptz) RETURNS consent_choice
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT GREATEST(consent_choice('express', express, withdrawal, at),
                    consent_choice('implied_purchase', purchase, withdrawal, at),
                    consent_choice('implied_contract', contract, withdrawal, at),
                    consent_choice('implied_inquiry', inquiry, withdrawal, at),
                    consent_choice('implied_publication', publication, withdrawal, at))
$$;

-- Merges the inserted ledger rows into consent_current: one grouped pass over
-- them (the aggregate of consent_latest, over these rows only), then an
-- upsert that keeps the later of the stored and the new row of each kind.
-- ON CONFLICT re-reads a row another transaction just committed, so two
-- imports touching one contact at once both count. Rows go in contact order,
-- so two such statements lock in the same order and cannot deadlock.
-- TimeZone UTC: month arithmetic follows the session zone (consent_valid_until).
CREATE FUNCTION consent_current_add() RETURNS trigger LANGUAGE plpgsql
SET TimeZone = 'UTC' AS $$
BEGIN
    INSERT INTO consent_current AS s
        (contact_id, channel, newest_at, withdrawn, withdrawal, express, purchase, contract,
         inquiry, publication, best_id, best_kind, best_source, best_obtained_at,
         best_valid_until)
    -- (n.withdrawal).id, not n.withdrawal: IS NOT NULL on a composite asks
    -- whether EVERY field is set, and a withdrawal has no end and no source.
    SELECT n.contact_id, n.channel, n.newest_at, (n.withdrawal).id IS NOT NULL, n.withdrawal,
           n.express, n.purchase, n.contract, n.inquiry, n.publication,
           (n.best).id, (n.best).kind, (n.best).source, (n.best).obtained_at,
           (n.best).valid_until
    FROM (
        SELECT g.*, consent_best(g.withdrawal, g.express, g.purchase, g.contract, g.inquiry,
                                 g.publication, '-infinity') AS best
        FROM (
            SELECT l.contact_id, l.channel, max(l.obtained_at) AS newest_at,
                   (max(ARRAY[(l.obtained_at, l.id, NULL, NULL)::consent_pick])
                       FILTER (WHERE l.action = 'withdraw'))[1] AS withdrawal,
                   (max(ARRAY[(l.obtained_at, l.id, v.valid_until, l.source)::consent_pick])
                       FILTER (WHERE l.kind = 'express'))[1] AS express,
                   (max(ARRAY[(l.obtained_at, l.id, v.valid_until, l.source)::consent_pick])
                       FILTER (WHERE l.kind = 'implied_purchase'))[1] AS purchase,
                   (max(ARRAY[(l.obtained_at, l.id, v.valid_until, l.source)::consent_pick])
                       FILTER (WHERE l.kind = 'implied_contract'))[1] AS contract,
                   (max(ARRAY[(l.obtained_at, l.id, v.valid_until, l.source)::consent_pick])
                       FILTER (WHERE l.kind = 'implied_inquiry'))[1] AS inquiry,
                   (max(ARRAY[(l.obtained_at, l.id, v.valid_until, l.source)::consent_pick])
                       FILTER (WHERE l.kind = 'implied_publication'))[1] AS publication
            FROM added l
            CROSS JOIN LATERAL (SELECT consent_valid_until(l.kind, l.obtained_at, l.ends_at)
                                AS valid_until) v
            WHERE l.topic_id IS NULL AND l.action IN ('grant', 'withdraw')
            GROUP BY l.contact_id, l.channel
        ) g
        -- OFFSET 0: the best grant computed once per row, not once per field
        -- read above (in FROM, as a function scan per row, it cost 1 s more
        -- per million rows).
        OFFSET 0
    ) n
    ORDER BY n.contact_id, n.channel
    ON CONFLICT (contact_id, channel) DO UPDATE SET
        newest_at = GREATEST(s.newest_at, EXCLUDED.newest_at),
        withdrawn = s.withdrawn OR EXCLUDED.withdrawn,
        withdrawal = GREATEST(s.withdrawal, EXCLUDED.withdrawal),
        express = GREATEST(s.express, EXCLUDED.express),
        purchase = GREATEST(s.purchase, EXCLUDED.purchase),
        contract = GREATEST(s.contract, EXCLUDED.contract),
        inquiry = GREATEST(s.inquiry, EXCLUDED.inquiry),
        publication = GREATEST(s.publication, EXCLUDED.publication),
        (best_id, best_kind, best_source, best_obtained_at, best_valid_until) = (
            SELECT b.id, b.kind, b.source, b.obtained_at, b.valid_until
            FROM consent_best(GREATEST(s.withdrawal, EXCLUDED.withdrawal),
                              GREATEST(s.express, EXCLUDED.express),
                              GREATEST(s.purchase, EXCLUDED.purchase),
                              GREATEST(s.contract, EXCLUDED.contract),
                              GREATEST(s.inquiry, EXCLUDED.inquiry),
                              GREATEST(s.publication, EXCLUDED.publication), '-infinity') b);
    RETURN NULL;
END $$;

CREATE TRIGGER consent_current_add AFTER INSERT ON consents
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION consent_current_add();

-- The ledger is append-only; only a development reset truncates it. (DELETE,
-- not TRUNCATE: the same statement may be truncating consent_current too.)
CREATE FUNCTION consent_current_clear() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM consent_current;
    RETURN NULL;
END $$;
CREATE TRIGGER consent_current_clear AFTER TRUNCATE ON consents
    FOR EACH STATEMENT EXECUTE FUNCTION consent_current_clear();

-- consent_current from the whole ledger, by consent_latest: fills it for the
-- ledger recorded before this migration, and repairs it should it ever be
-- doubted (tests compare it with what the trigger kept). Returns its rows.
CREATE FUNCTION consent_current_rebuild() RETURNS bigint LANGUAGE plpgsql
SET TimeZone = 'UTC' AS $$
DECLARE
    summarised bigint;
BEGIN
    DELETE FROM consent_current;
    INSERT INTO consent_current
        (contact_id, channel, newest_at, withdrawn, withdrawal, express, purchase, contract,
         inquiry, publication, best_id, best_kind, best_source, best_obtained_at,
         best_valid_until)
    SELECT l.contact_id, c.channel,
           GREATEST((l.withdrawal[1]).obtained_at, (l.express[1]).obtained_at,
                    (l.purchase[1]).obtained_at, (l.contract[1]).obtained_at,
                    (l.inquiry[1]).obtained_at, (l.publication[1]).obtained_at),
           l.withdrawal IS NOT NULL, l.withdrawal[1], l.express[1], l.purchase[1],
           l.contract[1], l.inquiry[1], l.publication[1],
           b.id, b.kind, b.source, b.obtained_at, b.valid_until
    FROM (VALUES ('email'), ('sms'), ('postal'), ('phone')) AS c (channel)
    CROSS JOIN LATERAL consent_latest(c.channel, 'infinity') l
    CROSS JOIN LATERAL consent_best(l.withdrawal[1], l.express[1], l.purchase[1],
                                    l.contract[1], l.inquiry[1], l.publication[1],
                                    '-infinity') b
    ORDER BY l.contact_id, c.channel;
    GET DIAGNOSTICS summarised = ROW_COUNT;
    RETURN summarised;
END $$;

SELECT consent_current_rebuild();
