-- The device list's `total` for `model=` alone (issue 10 item 4): COUNT(*) over the model's
-- devices read a quarter of the fleet's index entries on each GET /api/devices?model=... Kept
-- per model instead, by the devices' own triggers, as `device_list_count` keeps the unfiltered
-- total. `model` is COLLATE NOCASE as the devices' column is, so `model = ?` finds the row the
-- filter's `d.model = ?` counts. A row may stay at 0 after its last device left.
CREATE TABLE device_model_count (
    model TEXT COLLATE NOCASE PRIMARY KEY,
    listed INTEGER NOT NULL
);
INSERT INTO device_model_count (model, listed)
    SELECT model, COUNT(*) FROM devices
    WHERE removed_at IS NULL AND model IS NOT NULL GROUP BY model;

-- A device counts for its model while it is listed. Its model follows a `model` tag, the
-- device-profile name or the reported device description; the WHEN clauses keep the ingest
-- path's upserts (those columns are in their SET list) from running the bodies.
CREATE TRIGGER devices_model_count_insert AFTER INSERT ON devices
    WHEN NEW.removed_at IS NULL AND NEW.model IS NOT NULL
BEGIN
    INSERT INTO device_model_count (model, listed) VALUES (NEW.model, 1)
        ON CONFLICT(model) DO UPDATE SET listed = listed + 1;
END;
CREATE TRIGGER devices_model_count_delete AFTER DELETE ON devices
    WHEN OLD.removed_at IS NULL AND OLD.model IS NOT NULL
BEGIN
    UPDATE device_model_count SET listed = listed - 1 WHERE model = OLD.model;
END;
CREATE TRIGGER devices_model_count_update
    AFTER UPDATE OF tags_json, device_profile_name, device_id, removed_at ON devices
    WHEN (OLD.removed_at IS NULL) <> (NEW.removed_at IS NULL) OR OLD.model IS NOT NEW.model
BEGIN
    UPDATE device_model_count SET listed = listed - 1
        WHERE model = OLD.model AND OLD.removed_at IS NULL;
    INSERT INTO device_model_count (model, listed)
        SELECT NEW.model, 1 WHERE NEW.removed_at IS NULL AND NEW.model IS NOT NULL
        ON CONFLICT(model) DO UPDATE SET listed = listed + 1;
END;
