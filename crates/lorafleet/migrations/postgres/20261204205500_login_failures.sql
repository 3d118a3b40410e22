-- Failed logins per user name at an address and per address (see the SQLite twin).
CREATE TABLE login_failures (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    count BIGINT NOT NULL,
    last_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX login_failures_last_at ON login_failures(last_at);
