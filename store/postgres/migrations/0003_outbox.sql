-- The outbox: messages stored whose NATS publish is not yet confirmed (see
-- store.go). An append inserts its row in the same transaction as the
-- message; the publishing instance deletes it once the publish has left
-- the process, and any instance sweeps (republishes and deletes) the rows
-- left behind by one that died. It holds only messages in flight, so it
-- stays small; stored_at orders the sweep's "older than".
CREATE TABLE outbox (
    recipient text        NOT NULL,
    seq       bigint      NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT outbox_pkey PRIMARY KEY (recipient, seq)
);
