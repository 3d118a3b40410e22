-- How an image's version is written (issue 10 item 3): semver | gps_time | unix_time | raw,
-- from the sidecar's `versioning` or the API; NULL: as the devices that run it write theirs.
ALTER TABLE firmware_images ADD COLUMN versioning TEXT;
