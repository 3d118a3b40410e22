-- The device list at fleet scale (issue 10 item 4): the last uplink's link quality on the
-- device row, the device's model in one column, an index per sort order (each ends in dev_eui so
-- that keyset paging has a unique position), and a trigram index for the name search.

-- Link quality of the last uplink, written with last_seen so the list can show and sort by it.
ALTER TABLE devices ADD COLUMN rssi INTEGER;
ALTER TABLE devices ADD COLUMN snr REAL;
-- When the row last changed, in commit order: one more than the newest uplink id at that moment.
-- A list walk remembers the newest uplink id at its start; rows changed since keep the position
-- they had then (read from their uplinks up to that id), so the walk returns each device once.
ALTER TABLE devices ADD COLUMN changed_seq INTEGER NOT NULL DEFAULT 0;

-- The device's model as the operator names it: a `model` tag, else the device-profile name from
-- the network, else the device description the device reported. Case-insensitive.
ALTER TABLE devices ADD COLUMN model TEXT COLLATE NOCASE GENERATED ALWAYS AS (
    COALESCE(json_extract(tags_json, '$.model'), device_profile_name, device_id)
) VIRTUAL;

-- The sort keys: the same expressions as storage/devices.rs's SortKey::column, so that each
-- order (both directions) and each keyset position is one index range.
DROP INDEX IF EXISTS devices_listed;
CREATE INDEX devices_listed ON devices(COALESCE(last_seen, ''), dev_eui) WHERE removed_at IS NULL;
CREATE INDEX devices_by_name ON devices(name, dev_eui) WHERE removed_at IS NULL;
CREATE INDEX devices_by_eui ON devices(dev_eui) WHERE removed_at IS NULL;
CREATE INDEX devices_by_version ON devices(COALESCE(running_version, -1), dev_eui) WHERE removed_at IS NULL;
CREATE INDEX devices_by_rssi ON devices(COALESCE(rssi, -1000000), dev_eui) WHERE removed_at IS NULL;
CREATE INDEX devices_by_snr ON devices(COALESCE(snr, -1000000.0), dev_eui) WHERE removed_at IS NULL;
CREATE INDEX devices_by_battery ON devices(COALESCE(battery, -1.0), dev_eui) WHERE removed_at IS NULL;
CREATE INDEX devices_changed ON devices(changed_seq) WHERE removed_at IS NULL;
-- Filters that select few devices out of many.
-- The model filter in the default order (newest first) is one range of this index, and its count
-- the range's length.
CREATE INDEX devices_by_model ON devices(model, COALESCE(last_seen, ''), dev_eui) WHERE removed_at IS NULL;
CREATE INDEX devices_versions ON devices(running_version, versioning_type) WHERE removed_at IS NULL;
CREATE INDEX devices_by_application ON devices(application_id) WHERE removed_at IS NULL;

-- The name search: a trigram index (any substring of 3 or more characters, case-insensitive)
-- over what the search box matches, kept in step with devices by triggers. The update trigger
-- fires only when a searched column really changed, so the uplink path does not pay for it.
CREATE VIRTUAL TABLE devices_search USING fts5(
    dev_eui, name, application_name, dev_addr, tokenize = 'trigram'
);
INSERT INTO devices_search (rowid, dev_eui, name, application_name, dev_addr)
    SELECT rowid, dev_eui, name, COALESCE(application_name, ''), COALESCE(dev_addr, '') FROM devices;
CREATE TRIGGER devices_search_insert AFTER INSERT ON devices BEGIN
    INSERT INTO devices_search (rowid, dev_eui, name, application_name, dev_addr)
    VALUES (new.rowid, new.dev_eui, new.name, COALESCE(new.application_name, ''), COALESCE(new.dev_addr, ''));
END;
CREATE TRIGGER devices_search_update AFTER UPDATE OF name, application_name, dev_addr ON devices
WHEN old.name IS NOT new.name OR old.application_name IS NOT new.application_name
     OR old.dev_addr IS NOT new.dev_addr
BEGIN
    UPDATE devices_search SET name = new.name,
        application_name = COALESCE(new.application_name, ''), dev_addr = COALESCE(new.dev_addr, '')
    WHERE rowid = new.rowid;
END;
CREATE TRIGGER devices_search_delete AFTER DELETE ON devices BEGIN
    DELETE FROM devices_search WHERE rowid = old.rowid;
END;
