-- The quotas of VLANs and port forwards, and the snapshots the storage quota counts, are
-- counted per customer inside the transactions that make them: one indexed count each.
CREATE INDEX vlans_by_customer ON vlans(customer_id);
CREATE INDEX port_forwards_by_customer ON port_forwards(customer_id);
CREATE INDEX snapshots_by_customer ON snapshots(customer_id);
