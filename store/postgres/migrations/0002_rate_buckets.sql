-- The deployment's rate-limit buckets (package ratelimit): one row per
-- (limit, key) that someone used lately. Instances lease tokens from a row
-- in batches; take_tokens does the refill and the take under the row lock,
-- in one round trip, on the server's clock, which every instance shares.
CREATE TABLE rate_buckets (
    key    text             NOT NULL,
    tokens double precision NOT NULL,
    at     timestamptz      NOT NULL,
    CONSTRAINT rate_buckets_pkey PRIMARY KEY (key)
);

CREATE INDEX rate_buckets_at_idx ON rate_buckets (at);

CREATE FUNCTION take_tokens(k text, rate double precision, burst double precision,
                            need double precision, want double precision,
                            OUT granted double precision, OUT tokens_left double precision)
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := clock_timestamp();
    avail double precision;
BEGIN
    INSERT INTO rate_buckets (key, tokens, at) VALUES (k, burst, t) ON CONFLICT (key) DO NOTHING;
    SELECT least(burst, b.tokens + rate * greatest(0, extract(epoch FROM t - b.at)))
      INTO avail FROM rate_buckets b WHERE b.key = k FOR UPDATE;
    IF avail >= need THEN
        granted := least(want, avail);
    ELSE
        granted := 0;
    END IF;
    tokens_left := avail - granted;
    UPDATE rate_buckets SET tokens = tokens_left, at = t WHERE key = k;
END
$$;
