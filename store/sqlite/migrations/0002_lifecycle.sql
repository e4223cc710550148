-- The lifecycle of a handle: key rotation, deletion, key history. Times are
-- Unix microseconds, UTC.
--
-- A deleted handle keeps its row (deleted_at set) so that its name is never
-- registrable again; its counter row goes, so a later send finds no recipient.
ALTER TABLE handles ADD COLUMN deleted_at INTEGER;

-- Every key set each handle has had, current included (valid_until NULL).
CREATE TABLE key_history (
    id             INTEGER NOT NULL PRIMARY KEY,
    handle         TEXT    NOT NULL REFERENCES handles (handle),
    signing_key    TEXT    NOT NULL,
    encryption_key TEXT    NOT NULL,
    valid_from     INTEGER NOT NULL,
    valid_until    INTEGER
);
CREATE INDEX key_history_handle_idx ON key_history (handle, valid_from);
INSERT INTO key_history (handle, signing_key, encryption_key, valid_from)
    SELECT handle, signing_key, encryption_key, created_at FROM handles;

-- Every signing key ever registered: a retired key is never registrable again.
CREATE TABLE signing_keys (
    signing_key TEXT NOT NULL PRIMARY KEY,
    handle      TEXT NOT NULL REFERENCES handles (handle)
);
INSERT INTO signing_keys (signing_key, handle) SELECT signing_key, handle FROM handles;
