-- acquire_lease with per_ip NULL applies no per-IP cap: it neither takes the
-- (kind, ip) advisory lock nor counts the IP's leases, and ip_open is 0. The
-- NATS logins' leases (kind nats-connections) have only a per-handle cap;
-- taking the IP's lock anyway serialised every login from behind one proxy
-- or NAT across the deployment. With per_ip set, it is 0007's function.
CREATE OR REPLACE FUNCTION acquire_lease(p_kind text, p_handle text, p_ip text, per_handle int, per_ip int, ttl_ms int,
                                         OUT lease_id bigint, OUT handle_open int, OUT ip_open int)
LANGUAGE plpgsql AS $$
DECLARE
    kh bigint := hashtextextended(p_kind || '|h|' || p_handle, 0);
    ki bigint := hashtextextended(p_kind || '|i|' || p_ip, 0);
BEGIN
    IF per_ip IS NULL THEN
        PERFORM pg_advisory_xact_lock(kh);
        ip_open := 0;
    ELSE
        PERFORM pg_advisory_xact_lock(least(kh, ki));
        IF kh <> ki THEN
            PERFORM pg_advisory_xact_lock(greatest(kh, ki));
        END IF;
        SELECT count(*) INTO ip_open FROM stream_leases
            WHERE kind = p_kind AND ip = p_ip AND expires_at > clock_timestamp();
    END IF;
    SELECT count(*) INTO handle_open FROM stream_leases
        WHERE kind = p_kind AND handle = p_handle AND expires_at > clock_timestamp();
    IF handle_open < per_handle AND (per_ip IS NULL OR ip_open < per_ip) THEN
        INSERT INTO stream_leases (kind, handle, ip, expires_at)
            VALUES (p_kind, p_handle, p_ip, clock_timestamp() + ttl_ms * interval '1 millisecond')
            RETURNING id INTO lease_id;
    END IF;
END
$$;
