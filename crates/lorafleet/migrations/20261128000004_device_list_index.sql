-- The device list shows devices not removed, newest activity first; a partial index serves both
-- its count and its order without reading removed devices or sorting.
DROP INDEX IF EXISTS devices_last_seen;
CREATE INDEX devices_listed ON devices(last_seen DESC) WHERE removed_at IS NULL;
