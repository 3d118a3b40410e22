-- Waves (issue 10 item 6): a campaign rolled out to growing shares of its devices.
-- The checked `rollout` of the request (NULL: every device at once).
ALTER TABLE campaigns ADD COLUMN rollout_json TEXT;
-- Each wave's state (pending | running | succeeded | failed | skipped), set when it starts.
ALTER TABLE campaigns ADD COLUMN waves_json TEXT;
-- Why a campaign in state `paused` waits for the operator.
ALTER TABLE campaigns ADD COLUMN paused_reason TEXT;
-- The device's wave (0-based), assigned once when the campaign starts.
ALTER TABLE campaign_devices ADD COLUMN wave BIGINT;
