-- Secrets every instance of a deployment must share (its NATS keys); see
-- the Postgres migration. created_at is Unix microseconds, UTC.
CREATE TABLE deployment_secrets (
    name       TEXT    NOT NULL PRIMARY KEY,
    value      TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
