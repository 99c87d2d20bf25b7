-- Paging of the List operations (issue 13): each reads one page in its order by a keyset on
-- the id (`id > after_id ORDER BY id LIMIT n`, or newest first `id < before_id ORDER BY id
-- DESC`) from an index holding the list's scope and then the id, so a first page costs the
-- same however many items the customer has.

-- ListJobs filtered by status, by type, or both (the unfiltered list reads
-- jobs_by_customer (customer_id, id)).
CREATE INDEX jobs_by_customer_status_id ON jobs(customer_id, status, id);
CREATE INDEX jobs_by_customer_type ON jobs(customer_id, job_type, id);

-- ListVDCs, ListVLANs, ListDisks, ListServers, ListImages (the caller's own images).
DROP INDEX vdcs_by_customer;
CREATE INDEX vdcs_by_customer ON vdcs(customer_id, id);
DROP INDEX vlans_by_vdc;
CREATE INDEX vlans_by_vdc ON vlans(vdc_id, id);
DROP INDEX disks_by_vdc;
CREATE INDEX disks_by_vdc ON disks(vdc_id, id);
DROP INDEX servers_by_vdc;
CREATE INDEX servers_by_vdc ON servers(vdc_id, id);
DROP INDEX images_by_customer;
CREATE INDEX images_by_customer ON images(customer_id, id);

-- ListSnapshots (snapshots had no index by disk), ListSSHKeys, ListAuthenticationTokens,
-- ListImageShares.
CREATE INDEX snapshots_by_disk ON snapshots(disk_id, id);
CREATE INDEX ssh_keys_by_customer ON ssh_keys(customer_id, id);
CREATE INDEX auth_tokens_by_customer_id ON auth_tokens(customer_id, id);
CREATE INDEX image_shares_by_image ON image_shares(image_id, id);

-- ListUsage, by time then id.
DROP INDEX usage_by_customer;
CREATE INDEX usage_by_customer ON usage_records(customer_id, created, id);
