-- Campaign leases (see the SQLite twin): the owning instance, until when, and the attempt.
ALTER TABLE campaigns ADD COLUMN lease_owner TEXT;
ALTER TABLE campaigns ADD COLUMN lease_until TIMESTAMPTZ;
ALTER TABLE campaigns ADD COLUMN lease_attempt BIGINT NOT NULL DEFAULT 0;
