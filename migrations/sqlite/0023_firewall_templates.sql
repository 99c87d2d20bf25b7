-- Firewall templates (issue 25): a customer's named, ordered rules with default policies,
-- applied to servers. Both tables are written only by ops::firewall; a server's template is
-- `servers.firewall_template_id` (written by ops::server). Rules are kept in `position`
-- order, 1 to n within their template (the first that matches decides). `cidr` is the other
-- end (source of what comes in, destination of what goes out); ports are NULL for ICMP, ANY,
-- and TCP or UDP on every port.
CREATE TABLE firewall_templates (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id      INTEGER NOT NULL REFERENCES customers(id),
    vdc_id           INTEGER NOT NULL REFERENCES vdcs(id),
    name             TEXT NOT NULL,
    default_inbound  TEXT NOT NULL,
    default_outbound TEXT NOT NULL,
    created          INTEGER NOT NULL
);
CREATE INDEX firewall_templates_by_customer ON firewall_templates(customer_id, id);

CREATE TABLE firewall_rules (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    template_id INTEGER NOT NULL REFERENCES firewall_templates(id),
    position    INTEGER NOT NULL,
    direction   TEXT NOT NULL,
    protocol    TEXT NOT NULL,
    port_from   INTEGER,
    port_to     INTEGER,
    cidr        TEXT NOT NULL,
    action      TEXT NOT NULL,
    created     INTEGER NOT NULL
);
CREATE INDEX firewall_rules_by_template ON firewall_rules(template_id, position);

ALTER TABLE servers ADD COLUMN firewall_template_id INTEGER REFERENCES firewall_templates(id);
CREATE INDEX servers_by_firewall_template ON servers(firewall_template_id);
