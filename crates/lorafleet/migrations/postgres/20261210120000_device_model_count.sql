-- The device list's `total` for `model=` alone (issue 10 item 4): COUNT(*) over the model's
-- devices read 25,000 rows from the table (a bitmap heap scan) at 100,000 devices, on each
-- GET /api/devices?model=... Kept per model instead, by the devices' own triggers, as signed
-- deltas the way `device_list_count` keeps the unfiltered total (appends never wait on each
-- other; one counter row per model would be locked by every transaction that adds a device of
-- it). Keyed by lower(model), as the filter compares. storage/devices.rs sums a model's deltas
-- and folds them into one row when they grow.
CREATE TABLE device_model_count (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_key TEXT NOT NULL,
    delta BIGINT NOT NULL
);
CREATE INDEX device_model_count_by_key ON device_model_count(model_key);
INSERT INTO device_model_count (model_key, delta)
    SELECT lower(model), COUNT(*) FROM devices
    WHERE removed_at IS NULL AND model IS NOT NULL GROUP BY lower(model);

-- A device counts for its model while it is listed: -1 for what it was, +1 for what it is.
CREATE FUNCTION device_model_count_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.removed_at IS NULL AND OLD.model IS NOT NULL THEN
        INSERT INTO device_model_count (model_key, delta) VALUES (lower(OLD.model), -1);
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.removed_at IS NULL AND NEW.model IS NOT NULL THEN
        INSERT INTO device_model_count (model_key, delta) VALUES (lower(NEW.model), 1);
    END IF;
    RETURN NULL;
END
$$;

-- The model follows a `model` tag, the device-profile name or the reported device
-- description; WHEN keeps the ingest path's upserts (those columns are in their SET list) from
-- calling the function.
CREATE TRIGGER devices_model_count_insert AFTER INSERT ON devices
    FOR EACH ROW WHEN (NEW.removed_at IS NULL AND NEW.model IS NOT NULL)
    EXECUTE FUNCTION device_model_count_changed();
CREATE TRIGGER devices_model_count_delete AFTER DELETE ON devices
    FOR EACH ROW WHEN (OLD.removed_at IS NULL AND OLD.model IS NOT NULL)
    EXECUTE FUNCTION device_model_count_changed();
CREATE TRIGGER devices_model_count_update
    AFTER UPDATE OF tags_json, device_profile_name, device_id, removed_at ON devices
    FOR EACH ROW WHEN ((OLD.removed_at IS NULL) <> (NEW.removed_at IS NULL)
                       OR lower(OLD.model) IS DISTINCT FROM lower(NEW.model))
    EXECUTE FUNCTION device_model_count_changed();
