-- The deployment's rate-limit buckets (package ratelimit): one row per
-- (limit, key) that someone used lately. Instances lease tokens from a row
-- in batches; take_tokens does the refill and the take under the row lock,
-- for several buckets in one round trip, on the server's clock, which every
-- instance shares. The table is unlogged: a bucket is worth no WAL or
-- fsync, and after a crash every bucket is simply full again.
CREATE UNLOGGED TABLE rate_buckets (
    key    text             NOT NULL,
    tokens double precision NOT NULL,
    at     timestamptz      NOT NULL,
    CONSTRAINT rate_buckets_pkey PRIMARY KEY (key)
);

CREATE INDEX rate_buckets_at_idx ON rate_buckets (at);

-- take_tokens refills each keys[i] (at most bursts[i] tokens, rates[i] per
-- second), subtracts spents[i] (tokens an instance already spent on credit;
-- the bucket may go below zero), then takes between needs[i] and wants[i]
-- of what is left, as many as there are, or nothing when there are fewer
-- than needs[i]. Callers pass keys sorted, so that two calls lock rows in
-- one order.
CREATE FUNCTION take_tokens(keys text[], rates double precision[], bursts double precision[],
                            spents double precision[], needs double precision[], wants double precision[],
                            OUT granted double precision[], OUT tokens_left double precision[])
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := clock_timestamp();
    avail double precision;
    g double precision;
BEGIN
    granted := '{}';
    tokens_left := '{}';
    FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
        INSERT INTO rate_buckets AS b (key, tokens, at) VALUES (keys[i], bursts[i], t)
        ON CONFLICT (key) DO UPDATE
            SET tokens = least(EXCLUDED.tokens, b.tokens + rates[i] * greatest(0, extract(epoch FROM t - b.at))), at = t
        RETURNING b.tokens INTO avail;
        avail := avail - spents[i];
        IF avail >= needs[i] THEN
            g := least(wants[i], greatest(avail, 0));
        ELSE
            g := 0;
        END IF;
        IF g > 0 OR spents[i] > 0 THEN
            UPDATE rate_buckets SET tokens = avail - g WHERE key = keys[i];
        END IF;
        granted := granted || g;
        tokens_left := tokens_left || (avail - g);
    END LOOP;
END
$$;
