-- The audit trail: one row per call that changed something or tried to (API or command line)
-- and per failed login. Written only by ops::audit. Never holds argument values other than ids.
-- `customer_id` is the caller (NULL for the command line, and for a failed login whose e-mail
-- is no customer's; no foreign key: the trail outlives what it names); `email` the e-mail a
-- failed login gave; `operation` an API operation, a command (`customer add`) or `Login`;
-- `via` soap, json or cli; `address` the client's IP address (NULL for the command line);
-- `ids` the ids touched (`vdc_id=1 disk_id=7,8`); `outcome` OK or the error code.
CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    created     INTEGER NOT NULL,
    customer_id INTEGER,
    email       TEXT,
    operation   TEXT NOT NULL,
    via         TEXT NOT NULL CHECK (via IN ('soap', 'json', 'cli')),
    address     TEXT,
    ids         TEXT NOT NULL DEFAULT '',
    outcome     TEXT NOT NULL
);
CREATE INDEX audit_events_by_customer ON audit_events(customer_id, id);
