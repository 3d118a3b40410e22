-- What a user may do: `viewer` (read), `operator` (requests, downlinks, campaigns) or `admin`
-- (users, tokens, settings). Users made before roles existed could do everything, so they
-- keep doing so. A disabled user cannot log in, and its sessions and tokens stop working.
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'admin'
    CHECK (role IN ('viewer', 'operator', 'admin'));
ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
