-- The device list's plans at 100,000 devices (issue 10 item 4), found with EXPLAIN (ANALYZE,
-- BUFFERS) of each statement the list runs (BENCHMARKS.md, "Device list at fleet scale").
--
-- The last-seen sort key was the expression time_key(last_seen) under devices_listed. time_key
-- wraps to_char, which is only STABLE, so PostgreSQL never inlines it: every row a statement
-- passed evaluated it through the SQL-function executor (about 5 µs a call), also where the
-- index already gave the order (ORDER BY computes it for each row), and an index on an
-- expression never serves an index-only scan. An offset of 50,000 paid that 50,000 times
-- (280 ms). Stored, it is computed once per write, the index the same, and it compares in byte
-- order (COLLATE "C": what SortValue::cmp and SQLite compare, and no strcoll per comparison).
ALTER TABLE devices
    ADD COLUMN last_seen_key TEXT COLLATE "C" GENERATED ALWAYS AS (time_key(last_seen)) STORED;

-- The same orders as before, over the stored key. `model=` keeps its index on lower(model):
-- a stored lower-case model under an index-only scan made the count 3.4 times cheaper where the
-- pages were all-visible, but with statistics the planner then counted 25,000 trackers by a
-- sequential scan once they were not (twice the time of the bitmap scan it takes now).
DROP INDEX IF EXISTS devices_listed;
CREATE INDEX devices_listed ON devices(last_seen_key, dev_eui COLLATE "C") WHERE removed_at IS NULL;
DROP INDEX IF EXISTS devices_by_model;
CREATE INDEX devices_by_model ON devices(lower(model), last_seen_key, dev_eui COLLATE "C")
    WHERE removed_at IS NULL;

-- Planner statistics for the new column at once (autovacuum's ANALYZE would come later).
ANALYZE devices;
