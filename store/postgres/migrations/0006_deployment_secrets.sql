-- Secrets every instance of a deployment must share (its NATS keys), kept
-- here so that instances on one database agree on them by themselves: the
-- first to start stores its candidate, and every instance uses the stored one.
CREATE TABLE deployment_secrets (
    name       text        NOT NULL,
    value      text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT deployment_secrets_pkey PRIMARY KEY (name)
);
