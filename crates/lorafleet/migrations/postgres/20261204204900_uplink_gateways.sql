-- The gateways that heard each uplink (ChirpStack v4's rxInfo), as a JSON array; NULL when
-- the network did not say (v3, the simulated network). A campaign's multicast group is bound
-- to the fewest gateways that heard every device recently.
ALTER TABLE uplinks ADD COLUMN gateway_ids TEXT;
