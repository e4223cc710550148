-- The outbox: messages stored whose NATS publish is not yet confirmed (see
-- store.go). stored_at is Unix microseconds, UTC.
CREATE TABLE outbox (
    recipient TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    stored_at INTEGER NOT NULL,
    PRIMARY KEY (recipient, seq)
) WITHOUT ROWID;
