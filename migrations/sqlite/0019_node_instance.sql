-- Each start of a node gets a random instance id, written here and in the node's lock file
-- (`jobs::identity`): a restart on the same host can tell its own dead predecessor's fresh
-- heartbeat from a live process elsewhere serving the same node id.
ALTER TABLE nodes ADD COLUMN instance TEXT;
