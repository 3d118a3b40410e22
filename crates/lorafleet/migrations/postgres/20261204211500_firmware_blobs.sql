-- Firmware bytes in the database, by SHA-256 (see the SQLite twin).
CREATE TABLE firmware_blobs (
    sha256 TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    data BYTEA NOT NULL
);
