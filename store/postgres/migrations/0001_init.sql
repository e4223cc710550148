-- Handles, and the per-recipient counter that allocates seq: appends lock
-- the counter row, so one recipient's seqs are handed out (and committed) in
-- order, with no gap, by every kezd process sharing the database.
CREATE TABLE handles (
    handle         text        NOT NULL,
    signing_key    text        NOT NULL,
    encryption_key text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT handles_pkey PRIMARY KEY (handle),
    CONSTRAINT handles_signing_key_key UNIQUE (signing_key)
);

CREATE TABLE inbox_counters (
    handle   text   NOT NULL REFERENCES handles (handle),
    last_seq bigint NOT NULL DEFAULT 0,
    CONSTRAINT inbox_counters_pkey PRIMARY KEY (handle)
);

-- The envelope is text, never jsonb: it is returned byte for byte as sent.
-- The recipient needs no foreign key: its counter row, locked by every
-- append, already proves it exists.
CREATE TABLE messages (
    recipient text        NOT NULL,
    seq       bigint      NOT NULL,
    sender    text        NOT NULL,
    client_id text        NOT NULL,
    envelope  text        NOT NULL,
    sent_at   timestamptz NOT NULL,
    CONSTRAINT messages_pkey PRIMARY KEY (recipient, seq),
    CONSTRAINT messages_sender_client_id_key UNIQUE (sender, client_id)
);
