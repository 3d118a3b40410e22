-- PostgreSQL's 20261209120000_device_list_plans stores its last-seen sort key, which it
-- computed per row through a function it cannot inline. SQLite's key, COALESCE(last_seen, ''),
-- is a plain expression over the column it indexes; nothing changes here, and the file keeps
-- both backends' migration lists alike.
SELECT 1;
