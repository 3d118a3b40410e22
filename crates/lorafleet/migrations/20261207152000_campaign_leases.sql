-- Campaign leases: the instance running a campaign (lease_owner, random per process) holds it
-- until lease_until and renews it while it runs; another instance takes a lapsed lease over,
-- which counts as a new attempt (lease_attempt), so the log and the sends can tell them apart.
ALTER TABLE campaigns ADD COLUMN lease_owner TEXT;
ALTER TABLE campaigns ADD COLUMN lease_until TEXT;
ALTER TABLE campaigns ADD COLUMN lease_attempt INTEGER NOT NULL DEFAULT 0;
