-- Failed logins per user name at an address and per address, in the database so that several
-- instances on one database apply one back-off (they were process memory before).
CREATE TABLE login_failures (
    kind TEXT NOT NULL,                 -- name | address
    key TEXT NOT NULL,
    count INTEGER NOT NULL,
    last_at TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX login_failures_last_at ON login_failures(last_at);
