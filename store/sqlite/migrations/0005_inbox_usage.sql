-- Each inbox's usage, for its quota: messages and bytes of envelope text
-- held, kept by every append and delete in its own transaction.
ALTER TABLE inbox_counters ADD COLUMN msg_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE inbox_counters ADD COLUMN msg_bytes INTEGER NOT NULL DEFAULT 0;

UPDATE inbox_counters SET
    msg_count = (SELECT count(*) FROM messages WHERE recipient = inbox_counters.handle),
    msg_bytes = (SELECT coalesce(sum(octet_length(envelope)), 0) FROM messages WHERE recipient = inbox_counters.handle);

-- Retention deletes the oldest messages first.
CREATE INDEX messages_sent_at_idx ON messages (sent_at);
