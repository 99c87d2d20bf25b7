-- A node's address on the network between nodes (`--tunnel-address`), where the other nodes
-- send the VXLAN traffic of VLANs that span them; NULL: the node takes part in no tunnel.
ALTER TABLE nodes ADD COLUMN tunnel_address TEXT;
