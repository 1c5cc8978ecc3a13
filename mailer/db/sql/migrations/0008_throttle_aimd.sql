-- Adaptive domain rates become additive-increase / multiplicative-decrease
-- (mailer/aimd.py), decided in Python and stored here, shared by every worker.
--
-- Before, every 4xx whose text said "try again later" (which is what
-- greylisting says to one recipient) halved the domain's rate down to 1/64,
-- recovering by doubling every minute: 5 % of greylisted recipients brought a
-- domain to 1/32-1/64 of its rate within 40 s (issue 13, item 8).
--
-- The columns keep their meaning: `factor` is the share of the configured
-- rate set by the last cut, `penalised_at` the time of that cut. The share
-- allowed now is computed from the two by mailer.aimd (one place for the
-- rule), so recovery needs no writes. throttle_take no longer applies the
-- factor itself: the caller passes the rate it is allowed, and gets the
-- bucket's factor and seconds since its last cut back to compute the next.

DROP FUNCTION throttle_take(text, double precision, double precision, integer);
DROP FUNCTION throttle_penalise(text);

COMMENT ON COLUMN throttle_buckets.factor IS
    'share of the configured rate set by the last cut (mailer/aimd.py)';
COMMENT ON COLUMN throttle_buckets.penalised_at IS
    'time of the last cut; NULL: never cut';

-- Grants up to p_want tokens at p_rate (the caller's effective rate); returns
-- how many, how long to wait for the next one when none were granted, and the
-- bucket's cut state.
CREATE FUNCTION throttle_take(p_key text, p_rate double precision, p_burst double precision,
                              p_want integer, OUT granted integer, OUT wait_s double precision,
                              OUT factor double precision, OUT since_cut_s double precision)
LANGUAGE plpgsql AS $$
DECLARE
    b      throttle_buckets;
    now_ts timestamptz := clock_timestamp();
BEGIN
    INSERT INTO throttle_buckets (key, tokens, refreshed_at) VALUES (p_key, p_burst, now_ts)
    ON CONFLICT (key) DO NOTHING;
    SELECT * INTO b FROM throttle_buckets WHERE key = p_key FOR UPDATE;
    b.tokens := least(p_burst, b.tokens + extract(epoch FROM now_ts - b.refreshed_at) * p_rate);
    granted := greatest(0, least(p_want, floor(b.tokens)))::integer;
    wait_s := CASE WHEN granted > 0 THEN 0 ELSE (1 - b.tokens) / p_rate END;
    factor := b.factor;
    since_cut_s := extract(epoch FROM now_ts - b.penalised_at);
    UPDATE throttle_buckets SET tokens = b.tokens - granted, refreshed_at = now_ts
    WHERE key = p_key;
END $$;
