-- The consent rules of mailer/consent.py as small SQL functions, so the
-- audience reads the ledger in ONE grouped pass (no window, no second sort):
-- per contact, the latest withdrawal and the latest grant of each kind
-- (consent_latest), then each grant still standing, ranked (consent_choice).
-- The audience and the re-permission list share them; a property test proves
-- the audience and consent.evaluate agree. Every function is a single
-- statement the planner inlines: no call per row, and filters on contact_id
-- reach the ledger's index.

-- A ledger grant as the audience needs it, its validity end computed once.
-- Field order is comparison order: (obtained_at, id) is the ledger's "later
-- than" (ids break ties), so the greatest pick of a kind is its latest row.
CREATE TYPE consent_pick AS (
    obtained_at timestamptz,
    id          bigint,
    valid_until timestamptz,
    source      text
);

-- A standing grant, ranked. Field order is preference order, as consent._best:
-- a valid grant, then express, then one without an end, then the latest end
-- (the date obtained for one without an end), then the higher id, which is
-- unique: the fields after it only carry the winner's evidence.
CREATE TYPE consent_choice AS (
    valid       boolean,
    express     boolean,
    endless     boolean,
    rank_at     timestamptz,
    id          bigint,
    kind        text,
    obtained_at timestamptz,
    valid_until timestamptz,
    source      text
);

-- End instant (exclusive) of a grant's validity; NULL means no end.
-- Mirrors consent.valid_until. A single expression, so the planner inlines it.
-- Month arithmetic is the costly part of the audience: computed once per row.
CREATE FUNCTION consent_valid_until(kind text, obtained_at timestamptz, ends_at timestamptz)
RETURNS timestamptz LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE kind
               WHEN 'implied_purchase' THEN obtained_at + interval '24 months'  -- CASL s.10(10)(a)
               WHEN 'implied_contract' THEN ends_at + interval '24 months'      -- after it ends
               WHEN 'implied_inquiry' THEN obtained_at + interval '6 months'    -- CASL s.10(10)(c)
               WHEN 'implied_publication' THEN ends_at                          -- while relevant
           END
$$;

-- The latest grant of one kind, ranked at `at`, or NULL when there is none or
-- a withdrawal came after it (a withdrawal cancels every grant before it).
-- A single expression, so the planner inlines it: no function call per row.
CREATE FUNCTION consent_choice(kind text, pick consent_pick, withdrawal consent_pick,
                               at timestamptz) RETURNS consent_choice
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
               WHEN pick.id IS NOT NULL
                    AND (withdrawal.id IS NULL
                         OR (pick.obtained_at, pick.id) > (withdrawal.obtained_at, withdrawal.id))
               THEN ROW(pick.valid_until IS NULL OR at < pick.valid_until,
                        kind = 'express',
                        pick.valid_until IS NULL,
                        coalesce(pick.valid_until, pick.obtained_at),
                        pick.id, kind, pick.obtained_at, pick.valid_until,
                        pick.source)::consent_choice
           END
$$;

-- Per contact with ledger rows on `channel` obtained by `at`: the latest
-- withdrawal and the latest row of each kind (a later row about a kind
-- supersedes: how a contract's end is recorded). Postgres has no max() over
-- a composite, but it has one over arrays, compared element by element: a
-- one-element array of picks gives the greatest (obtained_at, id) with its
-- evidence attached.
CREATE FUNCTION consent_latest(channel text, at timestamptz)
RETURNS TABLE (contact_id bigint, withdrawal consent_pick[], express consent_pick[],
               purchase consent_pick[], contract consent_pick[], inquiry consent_pick[],
               publication consent_pick[])
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT l.contact_id,
           max(ARRAY[(l.obtained_at, l.id, NULL, NULL)::consent_pick])
               FILTER (WHERE l.action = 'withdraw'),
           max(ARRAY[(l.obtained_at, l.id, consent_valid_until(l.kind, l.obtained_at, l.ends_at),
                      l.source)::consent_pick]) FILTER (WHERE l.kind = 'express'),
           max(ARRAY[(l.obtained_at, l.id, consent_valid_until(l.kind, l.obtained_at, l.ends_at),
                      l.source)::consent_pick]) FILTER (WHERE l.kind = 'implied_purchase'),
           max(ARRAY[(l.obtained_at, l.id, consent_valid_until(l.kind, l.obtained_at, l.ends_at),
                      l.source)::consent_pick]) FILTER (WHERE l.kind = 'implied_contract'),
           max(ARRAY[(l.obtained_at, l.id, consent_valid_until(l.kind, l.obtained_at, l.ends_at),
                      l.source)::consent_pick]) FILTER (WHERE l.kind = 'implied_inquiry'),
           max(ARRAY[(l.obtained_at, l.id, consent_valid_until(l.kind, l.obtained_at, l.ends_at),
                      l.source)::consent_pick]) FILTER (WHERE l.kind = 'implied_publication')
    FROM consents l
    WHERE l.channel = $1 AND l.topic_id IS NULL AND l.action IN ('grant', 'withdraw')
      AND l.obtained_at <= $2
    GROUP BY l.contact_id
$$;
