-- The device list's `total` without a filter (issue 10 item 4): COUNT(*) over the listed
-- devices read every row, or every entry of an index, on each GET /api/devices (the largest
-- part of an unfiltered page at 100,000 devices). Kept here instead, as signed deltas that the
-- rows' own triggers append: appends never wait on each other, where one counter row would be
-- locked until commit by every transaction that adds a device, and two ingest transactions
-- each holding the other's device rows could deadlock on it. storage/devices.rs sums the
-- deltas and folds them into one row when they grow (FOR UPDATE SKIP LOCKED: never waits).
CREATE TABLE device_list_count (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delta BIGINT NOT NULL
);
INSERT INTO device_list_count (delta) SELECT COUNT(*) FROM devices WHERE removed_at IS NULL;

-- A device joins the list when inserted or brought back (removed_at set to NULL), and leaves it
-- when removed or deleted.
CREATE FUNCTION device_list_count_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO device_list_count (delta) VALUES (
        CASE WHEN TG_OP = 'INSERT' THEN 1
             WHEN TG_OP = 'DELETE' THEN -1
             WHEN NEW.removed_at IS NULL THEN 1
             ELSE -1 END);
    RETURN NULL;
END
$$;

-- WHEN keeps the ingest path's upserts (removed_at is in their SET list) from calling it.
CREATE TRIGGER devices_list_count_insert AFTER INSERT ON devices
    FOR EACH ROW WHEN (NEW.removed_at IS NULL) EXECUTE FUNCTION device_list_count_changed();
CREATE TRIGGER devices_list_count_delete AFTER DELETE ON devices
    FOR EACH ROW WHEN (OLD.removed_at IS NULL) EXECUTE FUNCTION device_list_count_changed();
CREATE TRIGGER devices_list_count_update AFTER UPDATE OF removed_at ON devices
    FOR EACH ROW WHEN ((OLD.removed_at IS NULL) <> (NEW.removed_at IS NULL))
    EXECUTE FUNCTION device_list_count_changed();
