-- Each inbox's usage, for its quota: messages and bytes of envelope text
-- held. Appends and deletes keep it under the counter row's lock, in their
-- own transaction, so a quota check is one row read, never a count.
ALTER TABLE inbox_counters
    ADD COLUMN msg_count bigint NOT NULL DEFAULT 0,
    ADD COLUMN msg_bytes bigint NOT NULL DEFAULT 0;

UPDATE inbox_counters c SET msg_count = u.n, msg_bytes = u.b
FROM (SELECT recipient, count(*) AS n, sum(octet_length(envelope)) AS b
      FROM messages GROUP BY recipient) u
WHERE c.handle = u.recipient;

-- Retention deletes the oldest messages of the deployment first.
CREATE INDEX messages_sent_at_idx ON messages (sent_at);
