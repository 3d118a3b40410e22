-- Firmware library and FUOTA campaigns.

CREATE TABLE firmware_images (
    id INTEGER PRIMARY KEY,
    file_name TEXT NOT NULL,
    -- Where the bytes are: a file in firmware.dir, or an upload in <data_dir>/firmware/.
    path TEXT NOT NULL,
    source TEXT NOT NULL,               -- dir | upload
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,               -- lower-case hex; duplicates are refused
    added_at TEXT NOT NULL,
    -- Set when a rescan no longer finds the file; kept so campaigns still name their image.
    missing_at TEXT,
    -- Signed-package trailer, when the image ends with one.
    trailer_version INTEGER,
    trailer_kind TEXT,                  -- full | jdiff | ddelta
    trailer_old_size INTEGER,
    trailer_manufacturer_uuid TEXT,
    trailer_device_class_uuid TEXT,
    trailer_signature_len INTEGER,
    trailer_error TEXT,                 -- why a trailer-looking tail did not parse
    -- Operator metadata: from the sidecar <file>.toml or edited through the API.
    target TEXT,
    from_version TEXT,
    to_version TEXT,
    compression TEXT,
    notes TEXT,
    -- JSON list of the metadata fields edited through the API; a rescan does not overwrite them
    -- with the sidecar's values.
    edited_json TEXT NOT NULL DEFAULT '[]',
    -- Deleted images stay as rows while campaigns name them; only live ones must be unique.
    deleted_at TEXT
);
CREATE UNIQUE INDEX firmware_images_sha256 ON firmware_images(sha256) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX firmware_images_path ON firmware_images(path) WHERE deleted_at IS NULL;

CREATE TABLE campaigns (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    state TEXT NOT NULL,                -- draft | running | completed | failed | cancelled
    driver TEXT NOT NULL,               -- chirpstack-v4 | fuota-server-v3 | engine
    firmware_id INTEGER NOT NULL REFERENCES firmware_images(id),
    -- The request as the operator sent it, without keys (PATCH merges into it).
    request_json TEXT NOT NULL,
    -- The settings with every default filled in (no keys).
    settings_json TEXT NOT NULL,
    -- Key material given with the request; cleared once the driver no longer needs it.
    keys_json TEXT NOT NULL DEFAULT '{}',
    plan_json TEXT NOT NULL DEFAULT '{}',
    -- The driver's own references (deployment ids, ...), opaque to everything else.
    driver_state_json TEXT,
    started INTEGER NOT NULL DEFAULT 0, -- the driver's start succeeded
    next_poll_at TEXT,
    poll_failures INTEGER NOT NULL DEFAULT 0,
    last_poll_error TEXT,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    started_at TEXT,
    completed_at TEXT
);
CREATE INDEX campaigns_state ON campaigns(state, next_poll_at);

-- Per-device progress: a persisted state machine, so a restart resumes where it stopped.
CREATE TABLE campaign_devices (
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
    dev_eui TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_action_at TEXT,
    mc_group_setup_at TEXT,
    frag_session_setup_at TEXT,
    mc_session_setup_at TEXT,
    frag_status_at TEXT,
    completed_at TEXT,
    error TEXT,
    -- Driver-private per-device state (e.g. which deployment the device is in).
    driver_json TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (campaign_id, dev_eui)
);

CREATE TABLE campaign_log (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
    at TEXT NOT NULL,
    level TEXT NOT NULL,                -- info | warning | error
    source TEXT NOT NULL,               -- lorafleet | service
    dev_eui TEXT,
    message TEXT NOT NULL,
    -- Drivers return the service's whole log on every poll; the key keeps each line once.
    dedup_key TEXT,
    UNIQUE (campaign_id, dedup_key)
);
CREATE INDEX campaign_log_campaign ON campaign_log(campaign_id, id);

-- Devices per stage whenever the counts change, for the progress chart.
CREATE TABLE campaign_progress (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
    at TEXT NOT NULL,
    counts_json TEXT NOT NULL
);
CREATE INDEX campaign_progress_campaign ON campaign_progress(campaign_id, id);
