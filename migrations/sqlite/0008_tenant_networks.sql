-- Tenant networks. Each VLAN gets a subnet of the pool (`--vlan-subnets`) and each server on
-- a VLAN an address in it, chosen by the platform and handed out by DHCP; both are unique so
-- two VLANs never share a subnet and two NICs never share an address (subnets are disjoint).
-- Rows made before this migration get theirs when the node starts (ops::network).
ALTER TABLE vlans ADD COLUMN subnet TEXT;
CREATE UNIQUE INDEX vlans_by_subnet ON vlans(subnet);
ALTER TABLE servers ADD COLUMN ipv4 TEXT;
CREATE UNIQUE INDEX servers_by_ipv4 ON servers(ipv4);

-- Port forwards: TCP connections to `host_port` on the node running the server reach
-- `guest_port` of its NIC. Written only by ops::port_forward; deleted with their server.
CREATE TABLE port_forwards (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    server_id   INTEGER NOT NULL REFERENCES servers(id),
    guest_port  INTEGER NOT NULL CHECK (guest_port BETWEEN 1 AND 65535),
    host_port   INTEGER NOT NULL UNIQUE CHECK (host_port BETWEEN 1 AND 65535),
    created     INTEGER NOT NULL,
    UNIQUE (server_id, guest_port)
);
