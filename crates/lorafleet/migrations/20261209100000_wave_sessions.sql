-- Each wave as run (issue 8 item 6): the operator's wave it belongs to and the multicast
-- session its devices share (`{"of": 0, "session": {"fragmentation": {...}}}` per wave), set
-- at start. A mixed fleet splits each operator wave (or the one implicit wave of a campaign
-- without rollout) into one wave per session. NULL: the waves are `rollout_json`'s as given.
ALTER TABLE campaigns ADD COLUMN wave_sessions_json TEXT;
