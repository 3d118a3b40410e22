-- Firmware bytes in the database, by SHA-256, so every instance on one database can serve
-- every campaign (the files in firmware.dir and <data_dir>/firmware/ stay the library's source).
CREATE TABLE firmware_blobs (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    data BLOB NOT NULL
);
