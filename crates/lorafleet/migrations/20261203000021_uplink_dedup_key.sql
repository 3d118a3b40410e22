-- A repeated integration post of the same uplink (ChirpStack v4's deduplicationId, or v3's
-- DevEUI + FCnt + time) is acknowledged and stored once. NULL for uplinks without a key (the
-- simulated network's, v3 events without a time), which are never taken for repeats.
ALTER TABLE uplinks ADD COLUMN dedup_key TEXT;
CREATE UNIQUE INDEX uplinks_dedup_key ON uplinks(dedup_key) WHERE dedup_key IS NOT NULL;
