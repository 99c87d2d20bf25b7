-- Initial schema (SQLite). Times are epoch milliseconds; flags are 0/1 integers.
-- AUTOINCREMENT keeps ids from ever being reused: a deleted resource's id stays dead.

CREATE TABLE billing_entities (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid    TEXT NOT NULL UNIQUE,
    name    TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL
);

CREATE TABLE customers (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid              TEXT NOT NULL UNIQUE,
    email             TEXT NOT NULL UNIQUE,          -- stored lower-case
    password_hash     TEXT NOT NULL,                 -- argon2id PHC string
    is_admin          INTEGER NOT NULL DEFAULT 0,
    billing_entity_id INTEGER NOT NULL REFERENCES billing_entities(id),
    created           INTEGER NOT NULL
);

CREATE TABLE vdcs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid        TEXT NOT NULL UNIQUE,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    name        TEXT NOT NULL,
    created     INTEGER NOT NULL
);
CREATE INDEX vdcs_by_customer ON vdcs(customer_id);

CREATE TABLE vlans (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid        TEXT NOT NULL UNIQUE,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    vdc_id      INTEGER NOT NULL REFERENCES vdcs(id),
    name        TEXT NOT NULL,
    created     INTEGER NOT NULL
);
CREATE INDEX vlans_by_vdc ON vlans(vdc_id);

CREATE TABLE product_offers (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    type       TEXT NOT NULL CHECK (type IN ('server', 'disk', 'image')),
    processors INTEGER NOT NULL DEFAULT 0,
    memory     INTEGER NOT NULL DEFAULT 0,            -- MiB
    disk_size  INTEGER NOT NULL DEFAULT 0,            -- bytes
    created    INTEGER NOT NULL
);

-- A file of the storage backend. Disks, images and snapshots point at volumes; a volume may be
-- a thin overlay on a backing volume, which therefore lives as long as something depends on it.
CREATE TABLE volumes (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    file              TEXT NOT NULL UNIQUE,
    format            TEXT NOT NULL CHECK (format IN ('raw', 'qcow2')),
    size              INTEGER NOT NULL,
    backing_volume_id INTEGER REFERENCES volumes(id),
    created           INTEGER NOT NULL
);

CREATE TABLE images (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid              TEXT NOT NULL UNIQUE,
    customer_id       INTEGER REFERENCES customers(id),   -- NULL: a platform image
    name              TEXT NOT NULL,
    size              INTEGER NOT NULL,
    media             TEXT NOT NULL DEFAULT 'disk' CHECK (media IN ('disk', 'iso')),
    default_username  TEXT,
    generate_password INTEGER NOT NULL DEFAULT 1,
    volume_id         INTEGER REFERENCES volumes(id),     -- NULL: blank
    product_offer_id  INTEGER REFERENCES product_offers(id),
    created           INTEGER NOT NULL
);
CREATE INDEX images_by_customer ON images(customer_id);

CREATE TABLE image_shares (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id    INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    target_kind TEXT NOT NULL CHECK (target_kind IN ('customer', 'billing_entity', 'platform')),
    target_uuid TEXT NOT NULL,                            -- 'platform' for the whole platform
    created     INTEGER NOT NULL,
    UNIQUE (image_id, target_kind, target_uuid)
);

CREATE TABLE servers (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid             TEXT NOT NULL UNIQUE,
    customer_id      INTEGER NOT NULL REFERENCES customers(id),
    vdc_id           INTEGER NOT NULL REFERENCES vdcs(id),
    vlan_id          INTEGER REFERENCES vlans(id),
    name             TEXT NOT NULL,
    status           INTEGER NOT NULL,
    status_reason    TEXT,
    processors       INTEGER NOT NULL,
    memory           INTEGER NOT NULL,
    image_id         INTEGER,                             -- informational: images may go away
    product_offer_id INTEGER NOT NULL REFERENCES product_offers(id),
    initial_user     TEXT,
    initial_password TEXT,
    metadata_token   TEXT,                                -- sha256 of the VM's metadata secret
    node             TEXT,                                -- the node whose hypervisor runs it
    created          INTEGER NOT NULL
);
CREATE INDEX servers_by_vdc ON servers(vdc_id);

CREATE TABLE disks (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid             TEXT NOT NULL UNIQUE,
    customer_id      INTEGER NOT NULL REFERENCES customers(id),
    vdc_id           INTEGER NOT NULL REFERENCES vdcs(id),
    name             TEXT NOT NULL,
    capacity         INTEGER NOT NULL,                    -- bytes
    media            TEXT NOT NULL DEFAULT 'disk' CHECK (media IN ('disk', 'iso')),
    server_id        INTEGER REFERENCES servers(id),
    attach_index     INTEGER,
    volume_id        INTEGER NOT NULL REFERENCES volumes(id),
    image_id         INTEGER,                             -- informational: the image it was made from
    origin_server_id INTEGER,                             -- the server CreateServer made it for
    product_offer_id INTEGER REFERENCES product_offers(id),
    created          INTEGER NOT NULL
);
CREATE INDEX disks_by_vdc ON disks(vdc_id);
CREATE INDEX disks_by_server ON disks(server_id);

CREATE TABLE snapshots (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid        TEXT NOT NULL UNIQUE,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    disk_id     INTEGER NOT NULL REFERENCES disks(id),
    name        TEXT NOT NULL,
    volume_id   INTEGER NOT NULL REFERENCES volumes(id),
    created     INTEGER NOT NULL
);

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid             TEXT NOT NULL UNIQUE,
    customer_id      INTEGER NOT NULL REFERENCES customers(id),
    job_type         TEXT NOT NULL,
    name             TEXT NOT NULL,
    status           INTEGER NOT NULL,
    item_type        TEXT,
    item_id          INTEGER,
    params           TEXT NOT NULL DEFAULT '{}',          -- never holds credentials
    phase            TEXT,
    progress         INTEGER NOT NULL DEFAULT 0,
    bytes_done       INTEGER NOT NULL DEFAULT 0,
    bytes_total      INTEGER,
    error_code       TEXT,
    error_message    TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires    INTEGER,
    created          INTEGER NOT NULL,
    started          INTEGER,
    finished         INTEGER
);
CREATE INDEX jobs_by_status ON jobs(status, id);
CREATE INDEX jobs_by_customer ON jobs(customer_id, id);

-- Secrets a queued job needs (fetch credentials), sealed with the node key and deleted as soon
-- as the job ends. Kept apart from `jobs` so job records never carry them.
CREATE TABLE job_secrets (
    job_id INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    sealed TEXT NOT NULL
);

CREATE TABLE usage_records (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id      INTEGER NOT NULL REFERENCES customers(id),
    kind             TEXT NOT NULL,                       -- 'image_use', 'bytes_fetched'
    image_id         INTEGER,
    product_offer_id INTEGER,
    server_id        INTEGER,
    job_id           INTEGER,
    quantity         INTEGER NOT NULL,
    created          INTEGER NOT NULL
);
CREATE INDEX usage_by_customer ON usage_records(customer_id, created);
