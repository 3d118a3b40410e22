-- The device list's `total` without a filter (issue 10 item 4): COUNT(*) over the listed
-- devices read every entry of an index on each GET /api/devices. Kept in one row instead,
-- maintained by the devices' own triggers (SQLite has one writer at a time: the row's lock
-- cannot deadlock, unlike PostgreSQL's, which appends deltas instead).
CREATE TABLE device_list_count (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    listed INTEGER NOT NULL
);
INSERT INTO device_list_count (id, listed)
    SELECT 1, COUNT(*) FROM devices WHERE removed_at IS NULL;

-- A device joins the list when inserted or brought back (removed_at set to NULL), and leaves it
-- when removed or deleted. An upsert's DO UPDATE fires the UPDATE trigger.
CREATE TRIGGER devices_list_count_insert AFTER INSERT ON devices
    WHEN NEW.removed_at IS NULL
BEGIN
    UPDATE device_list_count SET listed = listed + 1 WHERE id = 1;
END;
CREATE TRIGGER devices_list_count_delete AFTER DELETE ON devices
    WHEN OLD.removed_at IS NULL
BEGIN
    UPDATE device_list_count SET listed = listed - 1 WHERE id = 1;
END;
CREATE TRIGGER devices_list_count_update AFTER UPDATE OF removed_at ON devices
    WHEN (OLD.removed_at IS NULL) <> (NEW.removed_at IS NULL)
BEGIN
    UPDATE device_list_count SET listed = listed + (CASE WHEN NEW.removed_at IS NULL THEN 1 ELSE -1 END)
    WHERE id = 1;
END;
