-- Handles, and the per-recipient counter that allocates seq. Times are Unix
-- microseconds, UTC.
CREATE TABLE handles (
    handle         TEXT    NOT NULL PRIMARY KEY,
    signing_key    TEXT    NOT NULL,
    encryption_key TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    CONSTRAINT handles_signing_key_key UNIQUE (signing_key)
);

CREATE TABLE inbox_counters (
    handle   TEXT    NOT NULL PRIMARY KEY REFERENCES handles (handle),
    last_seq INTEGER NOT NULL DEFAULT 0
);

-- The envelope is the JSON text as sent, returned byte for byte.
CREATE TABLE messages (
    recipient TEXT    NOT NULL REFERENCES handles (handle),
    seq       INTEGER NOT NULL,
    sender    TEXT    NOT NULL,
    client_id TEXT    NOT NULL,
    envelope  TEXT    NOT NULL,
    sent_at   INTEGER NOT NULL,
    PRIMARY KEY (recipient, seq),
    CONSTRAINT messages_sender_client_id_key UNIQUE (sender, client_id)
) WITHOUT ROWID;
