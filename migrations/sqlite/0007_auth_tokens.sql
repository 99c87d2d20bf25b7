-- Authentication tokens (GetAuthenticationToken): what a script sends in place of an e-mail and
-- password, as the Basic user name or an `Authorization: Bearer` header. Written only by
-- ops::token. The token itself is never stored: `token_hash` is the hex SHA-256 of it (a
-- 256-bit random secret, so a plain hash suffices), looked up by its unique index on every
-- call. `parent_id` is the token the token was made with (NULL: made with a password);
-- revoking a token revokes those made with it. `created`, `expires`, `last_used` (to the
-- minute) and `revoked` are epoch milliseconds.
CREATE TABLE auth_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid        TEXT NOT NULL UNIQUE,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    token_hash  TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL DEFAULT '',
    parent_id   INTEGER,
    created     INTEGER NOT NULL,
    expires     INTEGER NOT NULL,
    last_used   INTEGER,
    revoked     INTEGER
);
CREATE INDEX auth_tokens_by_customer ON auth_tokens(customer_id, expires);
CREATE INDEX auth_tokens_by_parent ON auth_tokens(parent_id);

-- The token a call was made with (NULL: with a password, or none): "which customer or token".
ALTER TABLE audit_events ADD COLUMN token_id INTEGER;
