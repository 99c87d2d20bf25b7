-- The web control panel's sign-in sessions (`/panel/`). Written only by api::panel::session.
-- The session id itself (256 random bits, in the browser's HttpOnly cookie) is never stored:
-- `token_hash` is its hex SHA-256, looked up by its unique index on every panel request.
-- `csrf_token` is the session's anti-forgery token, which every panel form and htmx request
-- carries back. `created` and `last_seen` (to the minute) are epoch milliseconds: a session
-- ends two hours after it was last seen and twelve hours after it was made, whichever is first.
CREATE TABLE panel_sessions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash  TEXT NOT NULL UNIQUE,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    csrf_token  TEXT NOT NULL,
    created     INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL
);
CREATE INDEX panel_sessions_by_customer ON panel_sessions(customer_id);
CREATE INDEX panel_sessions_by_last_seen ON panel_sessions(last_seen);

-- The audit trail records calls made through the panel: `via` may be `panel`. SQLite cannot
-- change a CHECK constraint in place, so the table is rebuilt with the new one (the same
-- columns, rows and index).
CREATE TABLE audit_events_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    created     INTEGER NOT NULL,
    customer_id INTEGER,
    email       TEXT,
    operation   TEXT NOT NULL,
    via         TEXT NOT NULL CHECK (via IN ('soap', 'json', 'cli', 'panel')),
    address     TEXT,
    ids         TEXT NOT NULL DEFAULT '',
    outcome     TEXT NOT NULL,
    token_id    INTEGER
);
INSERT INTO audit_events_new (id, created, customer_id, email, operation, via, address, ids, outcome, token_id)
    SELECT id, created, customer_id, email, operation, via, address, ids, outcome, token_id FROM audit_events;
DROP TABLE audit_events;
ALTER TABLE audit_events_new RENAME TO audit_events;
CREATE INDEX audit_events_by_customer ON audit_events(customer_id, id);
