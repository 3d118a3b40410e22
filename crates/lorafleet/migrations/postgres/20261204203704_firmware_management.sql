-- What a device reported through Firmware Management (TS006): one JSON document of fields,
-- each with the time it was reported (firmware_management::Record).
ALTER TABLE devices ADD COLUMN firmware_management TEXT;
