-- When the running wave's session may start, on the network's clock (issue 10 item 2: one
-- clock): a successful wave plus the rollout's `pause_between_s`. NULL: at once.
ALTER TABLE campaigns ADD COLUMN wave_start_at TEXT;
