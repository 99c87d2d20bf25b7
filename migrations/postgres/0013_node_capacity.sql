-- What each node offers (written by the job queue when the node starts, kept fresh by its
-- heartbeat): the API address it listens on, its processors and memory, whether it can run
-- VMs (a hypervisor other than 'none'), its version, and when it started. `extility nodes`
-- shows them with the load of the servers on each node.
ALTER TABLE nodes ADD COLUMN address TEXT;
ALTER TABLE nodes ADD COLUMN vcpus BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN memory_mb BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN can_run_vms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN version TEXT;
ALTER TABLE nodes ADD COLUMN started BIGINT;
