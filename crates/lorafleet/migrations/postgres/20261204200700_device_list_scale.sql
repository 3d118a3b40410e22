-- The device list at fleet scale (SQLite's 20261204200700_device_list_scale, for PostgreSQL):
-- the last uplink's link quality on the device row, the device's model in one column, an index
-- per sort order (each ends in dev_eui, in byte order, so keyset paging has a unique position),
-- and a trigram index for the name search.

ALTER TABLE devices ADD COLUMN rssi BIGINT;
ALTER TABLE devices ADD COLUMN snr DOUBLE PRECISION;
-- When the row last changed, in commit order: one more than the newest uplink id at that moment
-- (storage/devices.rs's list walk reads it as SQLite's does).
ALTER TABLE devices ADD COLUMN changed_seq BIGINT NOT NULL DEFAULT 0;

-- The model as the operator names it: a `model` tag, else the device-profile name, else the
-- reported device description. Compared case-insensitively by the query (lower()).
ALTER TABLE devices ADD COLUMN model TEXT GENERATED ALWAYS AS (
    COALESCE(tags_json::jsonb ->> 'model', device_profile_name, device_id)
) STORED;

-- A time as the sort key SQLite's text times give: RFC 3339 UTC with milliseconds, '' for none,
-- so that a list cursor means the same on both backends. Immutable: the zone is fixed (UTC) and
-- the pattern has no locale-dependent fields.
CREATE FUNCTION time_key(t TIMESTAMPTZ) RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), '')
$$;

-- The sort keys: the same expressions as storage/devices.rs's SortKey::column on PostgreSQL.
DROP INDEX IF EXISTS devices_listed;
CREATE INDEX devices_listed ON devices(time_key(last_seen), dev_eui COLLATE "C") WHERE removed_at IS NULL;
CREATE INDEX devices_by_name ON devices((name COLLATE "C"), dev_eui COLLATE "C") WHERE removed_at IS NULL;
CREATE INDEX devices_by_eui ON devices(dev_eui COLLATE "C") WHERE removed_at IS NULL;
CREATE INDEX devices_by_version ON devices(COALESCE(running_version, -1), dev_eui COLLATE "C") WHERE removed_at IS NULL;
CREATE INDEX devices_by_rssi ON devices(COALESCE(rssi, -1000000), dev_eui COLLATE "C") WHERE removed_at IS NULL;
CREATE INDEX devices_by_snr ON devices(COALESCE(snr, -1000000.0), dev_eui COLLATE "C") WHERE removed_at IS NULL;
CREATE INDEX devices_by_battery ON devices(COALESCE(battery, -1.0), dev_eui COLLATE "C") WHERE removed_at IS NULL;
CREATE INDEX devices_changed ON devices(changed_seq) WHERE removed_at IS NULL;
CREATE INDEX devices_by_model ON devices(lower(model), time_key(last_seen), dev_eui COLLATE "C") WHERE removed_at IS NULL;
CREATE INDEX devices_versions ON devices(running_version, versioning_type) WHERE removed_at IS NULL;
CREATE INDEX devices_by_application ON devices(application_id) WHERE removed_at IS NULL;

-- The name search: ILIKE '%…%' over the searched columns, served by pg_trgm GIN indexes
-- (SQLite keeps an FTS5 trigram table by triggers instead; PostgreSQL needs none).
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX devices_search_eui ON devices USING gin (dev_eui gin_trgm_ops) WHERE removed_at IS NULL;
CREATE INDEX devices_search_name ON devices USING gin (name gin_trgm_ops) WHERE removed_at IS NULL;
CREATE INDEX devices_search_application ON devices USING gin (application_name gin_trgm_ops) WHERE removed_at IS NULL;
CREATE INDEX devices_search_addr ON devices USING gin (dev_addr gin_trgm_ops) WHERE removed_at IS NULL;
