-- The lifecycle of a handle: key rotation, deletion, key history.
--
-- A deleted handle keeps its row (deleted_at set) so that its name is never
-- registrable again; its counter row goes, which is what makes a send racing
-- the deletion fail (see DeleteHandle).
ALTER TABLE handles ADD COLUMN deleted_at timestamptz;

-- Every key set each handle has had, current included (valid_until NULL),
-- so that a message sealed before a rotation can still be verified.
CREATE TABLE key_history (
    id             bigint      GENERATED ALWAYS AS IDENTITY,
    handle         text        NOT NULL REFERENCES handles (handle),
    signing_key    text        NOT NULL,
    encryption_key text        NOT NULL,
    valid_from     timestamptz NOT NULL,
    valid_until    timestamptz,
    CONSTRAINT key_history_pkey PRIMARY KEY (id)
);
CREATE INDEX key_history_handle_idx ON key_history (handle, valid_from);
INSERT INTO key_history (handle, signing_key, encryption_key, valid_from)
    SELECT handle, signing_key, encryption_key, created_at FROM handles;

-- Every signing key ever registered: a retired key is never registrable again.
CREATE TABLE signing_keys (
    signing_key text NOT NULL,
    handle      text NOT NULL REFERENCES handles (handle),
    CONSTRAINT signing_keys_pkey PRIMARY KEY (signing_key)
);
INSERT INTO signing_keys (signing_key, handle) SELECT signing_key, handle FROM handles;
