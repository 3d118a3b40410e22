-- Scheduled start (issue 10 item 6): a campaign started with a `start_at` ahead waits in state
-- `scheduled` until the network's clock reaches it; the runner looks for the due ones.
ALTER TABLE campaigns ADD COLUMN start_at TEXT;
CREATE INDEX campaigns_scheduled ON campaigns(start_at) WHERE state = 'scheduled';
