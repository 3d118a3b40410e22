-- What firmware each device ran when: every change of the running version it reported
-- (Version & Status) and every campaign of lorafleet's engine that updated or tried to update
-- it, with the outcome. Shown on the device page.
CREATE TABLE firmware_history (
    id INTEGER PRIMARY KEY,
    dev_eui TEXT NOT NULL,
    at TEXT NOT NULL,
    version INTEGER,                    -- raw running version, when known
    slot INTEGER,
    campaign_id INTEGER,                -- the campaign behind the entry, if any
    outcome TEXT,                       -- verified | completed | not_updated | unreachable | refused
    message TEXT NOT NULL
);
CREATE INDEX firmware_history_device ON firmware_history(dev_eui, id DESC);
