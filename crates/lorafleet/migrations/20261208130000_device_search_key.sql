-- The device list's broad name search sorted by name (issue 10 item 4). A search that many
-- devices match is tested row by row along the sort order's index (storage/devices.rs,
-- SearchPlan::Scan). Its test was four LIKEs over columns read from the table, so a search whose
-- matches sort last (sort=name) read every row before them from the table: 215 ms at 100,000
-- devices. `search_key` is the searched columns as one ASCII-lower-cased text (what LIKE
-- compares), joined by U+0001 so that a search cannot match across two columns, as PostgreSQL's
-- `search_text`. Virtual: no table rebuild; the index below stores its value, so the walk in
-- name order tests `instr` on index entries alone and reads from the table only the page's rows.
ALTER TABLE devices ADD COLUMN search_key TEXT GENERATED ALWAYS AS (
    lower(dev_eui || char(1) || name || char(1) || COALESCE(application_name, '') || char(1)
          || COALESCE(dev_addr, ''))
) VIRTUAL;

-- Replaces devices_by_name (name, dev_eui): the same order and keyset positions, and every
-- upsert already rewrote that entry (name is in its SET list), so the ingest path pays no new
-- index.
DROP INDEX IF EXISTS devices_by_name;
CREATE INDEX devices_by_name ON devices(name, dev_eui, search_key) WHERE removed_at IS NULL;
