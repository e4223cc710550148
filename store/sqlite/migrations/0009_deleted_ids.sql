-- The (sender, client_id) of deleted messages; see the Postgres migration.
-- sent_at and deleted_at are Unix microseconds, UTC.
CREATE TABLE deleted_ids (
    sender     TEXT    NOT NULL,
    client_id  TEXT    NOT NULL,
    recipient  TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    sent_at    INTEGER NOT NULL,
    deleted_at INTEGER NOT NULL,
    PRIMARY KEY (sender, client_id)
) WITHOUT ROWID;
CREATE INDEX deleted_ids_deleted_at ON deleted_ids (deleted_at);
