-- The (sender, client_id) of deleted messages, so that a retry of a message
-- that delete-through or retention has removed is still answered as its
-- duplicate (PROTOCOL.md: "(sender, id) is unique"), with the seq and
-- sent_at it was stored with, and stores nothing. Rows are written in the
-- deleting transaction and forgotten deleted_at + --dedup-window later.
-- An account deletion records nothing: sends to a deleted handle are
-- unknown_handle.
CREATE TABLE deleted_ids (
    sender     text        NOT NULL,
    client_id  text        NOT NULL,
    recipient  text        NOT NULL,
    seq        bigint      NOT NULL,
    sent_at    timestamptz NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sender, client_id)
);
CREATE INDEX deleted_ids_deleted_at ON deleted_ids (deleted_at);
