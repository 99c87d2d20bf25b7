-- One-time tokens of the interactive consoles (GetConsoleAccess). Written only by ops::console.
-- The token itself is never stored: `token_hash` is its hex SHA-256. A token is good for one
-- connection (`used_at` set by the conditional update that takes it) before `expires_at`
-- (epoch milliseconds, 60 seconds after `created`); `via` is the adapter that asked for it, for
-- the audit row of the console it opens. Spent tokens are deleted an hour after they expire.
CREATE TABLE console_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash  TEXT NOT NULL UNIQUE,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    server_id   INTEGER NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('screen', 'serial')),
    via         TEXT NOT NULL,
    created     INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX console_tokens_by_expiry ON console_tokens(expires_at);
