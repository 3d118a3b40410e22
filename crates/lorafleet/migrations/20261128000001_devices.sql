-- Users, API tokens and browser sessions.
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    -- SHA-256 of the token: tokens are 256-bit random, so a fast hash is enough and keeps
    -- every API request cheap (passwords use argon2id).
    token_sha256 TEXT NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    last_used_at TEXT
);

CREATE TABLE sessions (
    id_sha256 TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);

-- Secrets generated on first start (integration token) and other one-off settings.
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE devices (
    dev_eui TEXT PRIMARY KEY,           -- 16 lower-case hex digits
    name TEXT NOT NULL DEFAULT '',
    application_id TEXT,
    application_name TEXT,
    device_profile_id TEXT,
    device_profile_name TEXT,
    tags_json TEXT NOT NULL DEFAULT '{}',
    dev_addr TEXT,
    source TEXT NOT NULL DEFAULT 'integration',
    first_seen TEXT,                    -- first uplink or join lorafleet received
    last_seen TEXT,
    joined_at TEXT,
    battery REAL,
    margin INTEGER,
    device_status_at TEXT,
    removed_at TEXT,                    -- hidden from the list until it sends again
    reappeared_at TEXT,
    -- Version & Status answers, each with the time it was reported.
    pkg_identifier INTEGER,
    pkg_version INTEGER,
    versioning_type INTEGER,
    nb_slots INTEGER,
    pkg_reported_at TEXT,
    running_slot INTEGER,
    running_version INTEGER,
    running_reported_at TEXT,
    stored_json TEXT,
    stored_reported_at TEXT,
    heap_available INTEGER,
    slot_size INTEGER,
    space_reported_at TEXT,
    uptime_s INTEGER,
    uptime_reported_at TEXT,
    manufacturer_id TEXT,
    device_id TEXT,
    description_reported_at TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX devices_last_seen ON devices(last_seen DESC);

CREATE TABLE uplinks (
    id INTEGER PRIMARY KEY,
    dev_eui TEXT NOT NULL,
    received_at TEXT NOT NULL,
    f_cnt INTEGER,
    f_port INTEGER,
    dr INTEGER,
    frequency INTEGER,
    rssi INTEGER,
    snr REAL,
    gateway_count INTEGER NOT NULL DEFAULT 0,
    confirmed INTEGER NOT NULL DEFAULT 0,
    data BLOB NOT NULL,
    object_json TEXT
);
CREATE INDEX uplinks_device ON uplinks(dev_eui, id DESC);

CREATE TABLE device_events (
    id INTEGER PRIMARY KEY,
    dev_eui TEXT NOT NULL,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX device_events_device ON device_events(dev_eui, id DESC);

-- Every downlink lorafleet asked the network to send, with its delivery state.
CREATE TABLE downlinks (
    id INTEGER PRIMARY KEY,
    dev_eui TEXT NOT NULL,
    f_port INTEGER NOT NULL,
    data BLOB NOT NULL,
    confirmed INTEGER NOT NULL DEFAULT 0,
    status_command TEXT,                -- Version & Status command, when it is one
    state TEXT NOT NULL,                -- requested | enqueued | sent | acknowledged | answered | failed
    network_ref TEXT,                   -- queue item id (v4) or fCnt (v3)
    f_cnt INTEGER,
    requested_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    answered_at TEXT,
    error TEXT
);
CREATE INDEX downlinks_device ON downlinks(dev_eui, id DESC);
