-- ListAllDisks and ListAllServers (issue 27): a customer's disks and servers of every VDC, a
-- page at a time in id order, from an index holding the customer and then the id.
CREATE INDEX disks_by_customer ON disks(customer_id, id);
CREATE INDEX servers_by_customer ON servers(customer_id, id);
