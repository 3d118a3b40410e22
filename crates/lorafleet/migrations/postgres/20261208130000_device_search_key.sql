-- SQLite's 20261208130000_device_search_key gives its devices the lower-cased `search_key`
-- that PostgreSQL's `search_text` (20261207156000_device_search_plan) already is, and puts it in
-- the name order's index. PostgreSQL reads the stored column from the row, which its walk
-- visits anyway; nothing changes here, and the file keeps both backends' migration lists alike.
SELECT 1;
