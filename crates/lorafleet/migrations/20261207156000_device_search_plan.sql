-- PostgreSQL's 20261207156000_device_search_plan puts its searched columns under one trigram
-- index. SQLite's FTS5 table `devices_search` (20261204200700_device_list_scale) already covers
-- them all, so nothing changes here; the file keeps both backends' migration lists alike.
SELECT 1;
