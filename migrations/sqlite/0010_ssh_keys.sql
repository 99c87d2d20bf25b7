-- Customers' SSH public keys (CreateSSHKey), and the keys each server is given at first boot
-- (CreateServer's ssh_key_ids). Both tables are written only by ops::ssh_key. `public_key`
-- is the key as OpenSSH writes it, re-encoded by the parser (`type base64 comment`);
-- `fingerprint` its SHA-256 fingerprint (`SHA256:...`), unique per customer, as is the
-- name. A server refers to its keys: deleting a key takes it out of the metadata of every
-- server that had it, so a compromised key is not installed by a later first boot.
CREATE TABLE ssh_keys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid        TEXT NOT NULL UNIQUE,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    name        TEXT NOT NULL,
    key_type    TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created     INTEGER NOT NULL,
    UNIQUE (customer_id, name),
    UNIQUE (customer_id, fingerprint)
);

CREATE TABLE server_ssh_keys (
    server_id  INTEGER NOT NULL REFERENCES servers(id),
    ssh_key_id INTEGER NOT NULL REFERENCES ssh_keys(id),
    PRIMARY KEY (server_id, ssh_key_id)
);
CREATE INDEX server_ssh_keys_by_key ON server_ssh_keys(ssh_key_id);
