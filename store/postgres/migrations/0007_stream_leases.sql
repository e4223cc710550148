-- Open streams and long-polls of the whole deployment, one row (a lease)
-- each, so that the per-handle and per-IP caps hold across instances on one
-- database. An instance pushes its leases' expires_at forward while they are
-- open; a killed instance's leases expire by themselves. Unlogged: after a
-- crash of the database every stream has reconnected anyway.
CREATE UNLOGGED TABLE stream_leases (
    id         bigint      GENERATED ALWAYS AS IDENTITY,
    kind       text        NOT NULL,
    handle     text        NOT NULL,
    ip         text        NOT NULL,
    expires_at timestamptz NOT NULL,
    CONSTRAINT stream_leases_pkey PRIMARY KEY (id)
);

CREATE INDEX stream_leases_handle_idx ON stream_leases (kind, handle);
CREATE INDEX stream_leases_ip_idx ON stream_leases (kind, ip);
CREATE INDEX stream_leases_expires_idx ON stream_leases (expires_at);

-- acquire_lease counts the unexpired leases of kind for handle and for ip
-- and, when both are below their caps, takes one more lasting ttl_ms. It
-- serialises callers for the same (kind, handle) and (kind, ip) with
-- transaction advisory locks, taken in one order.
CREATE FUNCTION acquire_lease(p_kind text, p_handle text, p_ip text, per_handle int, per_ip int, ttl_ms int,
                              OUT lease_id bigint, OUT handle_open int, OUT ip_open int)
LANGUAGE plpgsql AS $$
DECLARE
    kh bigint := hashtextextended(p_kind || '|h|' || p_handle, 0);
    ki bigint := hashtextextended(p_kind || '|i|' || p_ip, 0);
BEGIN
    PERFORM pg_advisory_xact_lock(least(kh, ki));
    IF kh <> ki THEN
        PERFORM pg_advisory_xact_lock(greatest(kh, ki));
    END IF;
    SELECT count(*) INTO handle_open FROM stream_leases
        WHERE kind = p_kind AND handle = p_handle AND expires_at > clock_timestamp();
    SELECT count(*) INTO ip_open FROM stream_leases
        WHERE kind = p_kind AND ip = p_ip AND expires_at > clock_timestamp();
    IF handle_open < per_handle AND ip_open < per_ip THEN
        INSERT INTO stream_leases (kind, handle, ip, expires_at)
            VALUES (p_kind, p_handle, p_ip, clock_timestamp() + ttl_ms * interval '1 millisecond')
            RETURNING id INTO lease_id;
    END IF;
END
$$;
