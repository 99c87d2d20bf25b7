//! Authentication tokens, and the only module that writes `auth_tokens`.
//!
//! A token is what a script sends in place of an e-mail and a password, as FCO's
//! `getAuthenticationToken` offers: the Basic user name (with any password, or none) or an
//! `Authorization: Bearer` header, over SOAP and JSON alike (`crate::api::auth` reads it,
//! `crate::ops::accounts::credentials::authenticate_token` checks it). A call made with a token acts as the
//! customer that made the token; the audit trail names the token (`token_id`).
//!
//! - **What a token is.** `ext_` and 43 characters: 256 random bits (the thread's CSPRNG,
//!   seeded from the OS) in URL-safe base64. It is shown once, in GetAuthenticationToken's
//!   answer; the table keeps only its SHA-256 (a plain hash is enough for 256 random bits: there
//!   is nothing to guess), never the token, and no log, audit row or job record holds it.
//! - **Checking one is cheap.** A SHA-256 and one lookup by a unique index, no argon2, no line
//!   to wait in (`crate::ops::accounts::throttle`'s password checks), and no cache: a revoked token is refused
//!   by the next call, on every node. When it was last used is written at most once a minute
//!   per token, so a script polling GetJob does not write on every call.
//! - **Lifetimes.** `expiry_seconds` (default `--default-token-lifetime`, 1 h) may not exceed
//!   `--max-token-lifetime` (24 h by default): a longer one is refused, not shortened, so a
//!   script never holds a token that dies earlier than it asked. A token may make tokens (as
//!   FCO allows: a script can hand a shorter-lived one to a helper), but one made with a token
//!   expires no later than that token, so a stolen token cannot be stretched, and revoking a
//!   token revokes those made with it. Lowering `--max-token-lifetime` shortens the tokens
//!   already made too: a token is refused once it is older than the maximum, whatever its
//!   `expires` said when it was made. A customer holds at most `--max-tokens-per-customer`
//!   live tokens (LIMIT_EXCEEDED beyond); dead ones are forgotten a week after they died.
//! - **Refusals.** An unknown, expired or revoked token is refused with UNAUTHENTICATED, as a
//!   wrong password is, counts as a failed login of the client's address for the login
//!   throttle, and leaves a failed login in the audit trail (naming the customer and the token
//!   when the token was one).

use base64::Engine;
use sqlx::AnyConnection;

use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::ops::accounts::secret;
use crate::ops::wire::Timestamp;
use crate::ops::{Caller, Ctx, args, page};
use crate::wire_struct;

/// What every token starts with: recognisable in a script, a log or a secret scanner.
pub const PREFIX: &str = "ext_";
/// Random bytes in a token.
const SECRET_BYTES: usize = 32;
/// The longest a token's name may be.
const MAX_NAME: usize = 100;
/// How stale `last_used` may be before a call writes it again.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;
/// How long a dead (expired or revoked) token's row is kept, so that audit rows naming it can
/// still be matched with its name and dates.
const KEEP_DEAD_MS: i64 = 7 * 24 * 3600 * 1000;
/// No token is longer than this (checked before hashing what a client sent).
const MAX_TOKEN_LEN: usize = 256;

wire_struct! {
    /// A new authentication token. `token` is the secret: send it as the HTTP Basic user name
    /// (with any password, or none) or as `Authorization: Bearer <token>`. It is shown this
    /// once and cannot be read again. `expires` is when it stops working; a token made with a
    /// token expires no later than that token.
    pub struct AuthenticationToken as "AuthenticationToken" {
        pub token_id: i64,
        pub token_uuid: String,
        pub token: String,
        pub name: String,
        pub created: Timestamp,
        pub expires: Timestamp,
    }
}

wire_struct! {
    /// One of the caller's authentication tokens, without its secret. `last_used` is to the
    /// minute (nil: never used); `parent_token_id` is the token it was made with (nil: made
    /// with a password); `revoked` is when it was revoked (nil: it was not); `current` says
    /// whether the call asking was made with it.
    pub struct AuthenticationTokenInfo as "AuthenticationTokenInfo" {
        pub token_id: i64,
        pub token_uuid: String,
        pub name: String,
        pub created: Timestamp,
        pub expires: Timestamp,
        pub last_used: Option<Timestamp>,
        pub parent_token_id: Option<i64>,
        pub revoked: Option<Timestamp>,
        pub current: bool,
    }
}

/// Whether a Basic user name is a token rather than an e-mail: it starts with [`PREFIX`] and
/// has no `@`.
pub fn looks_like_token(user: &str) -> bool {
    user.starts_with(PREFIX) && !user.contains('@')
}

/// The SHA-256 of a token, in hex: what `auth_tokens.token_hash` holds.
fn token_hash(token: &str) -> String {
    secret::hash(token)
}

/// A new token: the prefix and 256 random bits.
fn new_token() -> String {
    let secret: [u8; SECRET_BYTES] = rand::random();
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    )
}

/// What checking a token found.
#[derive(Debug)]
pub enum Check {
    /// A live token: the call is its customer's.
    Valid(Caller),
    /// Unknown, expired or revoked. `customer_id` and `token_id` name the token when it was
    /// one (for the audit trail's failed login).
    Refused {
        customer_id: Option<i64>,
        token_id: Option<i64>,
    },
}

#[derive(sqlx::FromRow)]
struct TokenLogin {
    id: i64,
    customer_id: i64,
    created: i64,
    expires: i64,
    last_used: Option<i64>,
    revoked: Option<i64>,
    customer_uuid: String,
    billing_entity_id: i64,
    is_admin: i64,
}

/// When a token made at `created` to expire at `expires` stops working, under a maximum
/// lifetime of `max_seconds` (the server's now, which may be shorter than when it was made).
fn effective_expiry(created: i64, expires: i64, max_seconds: u64) -> i64 {
    let max_ms = i64::try_from(max_seconds)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    expires.min(created.saturating_add(max_ms))
}

/// Checks a token: one SHA-256 and one lookup by its unique index. Notes when it was used
/// (at most once a minute per token). `max_seconds` is the server's maximum lifetime.
pub async fn check(db: &Db, token: &str, max_seconds: u64) -> ApiResult<Check> {
    let refused = Check::Refused {
        customer_id: None,
        token_id: None,
    };
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Ok(refused);
    }
    let row: Option<TokenLogin> = sqlx::query_as(
        "SELECT t.id, t.customer_id, t.created, t.expires, t.last_used, t.revoked, \
         c.uuid AS customer_uuid, c.billing_entity_id, c.is_admin \
         FROM auth_tokens t JOIN customers c ON c.id = t.customer_id WHERE t.token_hash = $1",
    )
    .bind(token_hash(token))
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else {
        return Ok(refused);
    };
    let now = now_ms();
    if row.revoked.is_some() || effective_expiry(row.created, row.expires, max_seconds) <= now {
        return Ok(Check::Refused {
            customer_id: Some(row.customer_id),
            token_id: Some(row.id),
        });
    }
    if row
        .last_used
        .is_none_or(|at| now - at >= LAST_USED_RESOLUTION_MS)
    {
        // Only a note: a failure to write it does not refuse the call.
        if let Err(err) = sqlx::query("UPDATE auth_tokens SET last_used = $1 WHERE id = $2")
            .bind(now)
            .bind(row.id)
            .execute(db.pool())
            .await
        {
            tracing::warn!(token_id = row.id, error = %err, "noting a token's use failed");
        }
    }
    Ok(Check::Valid(Caller {
        customer_id: row.customer_id,
        customer_uuid: row.customer_uuid,
        billing_entity_id: row.billing_entity_id,
        is_admin: row.is_admin != 0,
        token_id: Some(row.id),
    }))
}

/// Tokens made at or before this are dead under a maximum lifetime of `max_seconds`.
fn oldest_live(now: i64, max_seconds: u64) -> i64 {
    now.saturating_sub(effective_expiry(0, i64::MAX, max_seconds))
}

/// The lifetime, in seconds, GetAuthenticationToken gives a token: `asked`, or the default,
/// within the server's maximum.
fn lifetime(asked: Option<i64>, default: u64, max: u64) -> ApiResult<i64> {
    let max = i64::try_from(max).unwrap_or(i64::MAX);
    match asked {
        None => Ok(i64::try_from(default).unwrap_or(i64::MAX).min(max)),
        Some(seconds) if seconds < 1 => Err(ApiError::invalid(
            "expiry_seconds",
            "must be at least 1 (or omitted)",
        )),
        Some(seconds) if seconds > max => Err(ApiError::invalid(
            "expiry_seconds",
            format!("must be at most {max}, this server's longest token lifetime"),
        )),
        Some(seconds) => Ok(seconds),
    }
}

fn token_name(name: Option<String>) -> ApiResult<String> {
    let name = name.unwrap_or_default().trim().to_string();
    if name.chars().count() > MAX_NAME {
        return Err(ApiError::invalid(
            "name",
            format!("must have at most {MAX_NAME} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "must not contain control characters",
        ));
    }
    Ok(name)
}

/// Makes a token for the caller.
pub async fn get_authentication_token(
    ctx: &Ctx,
    a: args::GetAuthenticationToken,
) -> ApiResult<AuthenticationToken> {
    let config = &ctx.state.config;
    let seconds = lifetime(
        a.expiry_seconds,
        config.default_token_lifetime,
        config.max_token_lifetime,
    )?;
    let name = token_name(a.name)?;
    let customer_id = ctx.customer_id();
    let mut tx = ctx.begin_write().await?;
    // One customer's concurrent calls count its live tokens one after the other.
    crate::ops::accounts::customer::lock_customer(&mut tx, customer_id).await?;
    let now = now_ms();
    let mut expires = now.saturating_add(seconds.saturating_mul(1000));
    if let Some(parent) = ctx.caller.token_id {
        let (parent_created, parent_expires): (i64, i64) =
            sqlx::query_as("SELECT created, expires FROM auth_tokens WHERE id = $1")
                .bind(parent)
                .fetch_one(&mut *tx)
                .await?;
        expires = expires.min(effective_expiry(
            parent_created,
            parent_expires,
            config.max_token_lifetime,
        ));
    }
    sqlx::query(
        "DELETE FROM auth_tokens WHERE customer_id = $1 AND (expires < $2 OR revoked < $2)",
    )
    .bind(customer_id)
    .bind(now - KEEP_DEAD_MS)
    .execute(&mut *tx)
    .await?;
    let live: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM auth_tokens \
         WHERE customer_id = $1 AND revoked IS NULL AND expires > $2 AND created > $3",
    )
    .bind(customer_id)
    .bind(now)
    .bind(oldest_live(now, config.max_token_lifetime))
    .fetch_one(&mut *tx)
    .await?;
    let max_tokens = config.max_tokens_per_customer;
    if live >= max_tokens {
        return Err(ApiError::LimitExceeded(format!(
            "a customer may hold at most {max_tokens} live authentication tokens: revoke some \
             (RevokeAuthenticationToken) or let them expire"
        )));
    }
    let token = new_token();
    let token_uuid = uuid::Uuid::new_v4().to_string();
    let token_id: i64 = sqlx::query_scalar(
        "INSERT INTO auth_tokens \
         (uuid, customer_id, token_hash, name, parent_id, created, expires) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(&token_uuid)
    .bind(customer_id)
    .bind(token_hash(&token))
    .bind(&name)
    .bind(ctx.caller.token_id)
    .bind(now)
    .bind(expires)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(AuthenticationToken {
        token_id,
        token_uuid,
        token,
        name,
        created: Timestamp(now),
        expires: Timestamp(expires),
    })
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: i64,
    uuid: String,
    name: String,
    created: i64,
    expires: i64,
    last_used: Option<i64>,
    parent_id: Option<i64>,
    revoked: Option<i64>,
}

const TOKEN_COLUMNS: &str = "id, uuid, name, created, expires, last_used, parent_id, revoked";

impl TokenRow {
    fn info(self, ctx: &Ctx) -> AuthenticationTokenInfo {
        let max_seconds = ctx.state.config.max_token_lifetime;
        AuthenticationTokenInfo {
            token_id: self.id,
            token_uuid: self.uuid,
            name: self.name,
            created: Timestamp(self.created),
            expires: Timestamp(effective_expiry(self.created, self.expires, max_seconds)),
            last_used: self.last_used.map(Timestamp),
            parent_token_id: self.parent_id,
            revoked: self.revoked.map(Timestamp),
            current: ctx.caller.token_id == Some(self.id),
        }
    }
}

/// The caller's live tokens (neither expired nor revoked), oldest first.
pub async fn list_authentication_tokens(
    ctx: &Ctx,
    a: args::ListAuthenticationTokens,
) -> ApiResult<Vec<AuthenticationTokenInfo>> {
    let page = page::ascending(a.page_size, a.after_id)?;
    let now = now_ms();
    let rows: Vec<TokenRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TOKEN_COLUMNS} FROM auth_tokens \
         WHERE customer_id = $1 AND revoked IS NULL AND expires > $2 AND created > $3 \
         AND id > $4 ORDER BY id LIMIT $5"
    )))
    .bind(ctx.customer_id())
    .bind(now)
    .bind(oldest_live(now, ctx.state.config.max_token_lifetime))
    .bind(page.cursor)
    .bind(page.limit)
    .fetch_all(ctx.state.db.pool())
    .await?;
    Ok(rows.into_iter().map(|row| row.info(ctx)).collect())
}

/// The caller's token with this id, or whose secret this is.
async fn find_own(
    conn: &mut AnyConnection,
    customer_id: i64,
    token_id: Option<i64>,
    token: Option<&str>,
) -> ApiResult<TokenRow> {
    let row: Option<TokenRow> = match (token_id, token) {
        (Some(id), None) => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {TOKEN_COLUMNS} FROM auth_tokens WHERE id = $1 AND customer_id = $2"
            )))
            .bind(id)
            .bind(customer_id)
            .fetch_optional(&mut *conn)
            .await?
        }
        (None, Some(token)) => {
            if token.len() > MAX_TOKEN_LEN {
                None
            } else {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {TOKEN_COLUMNS} FROM auth_tokens \
                     WHERE token_hash = $1 AND customer_id = $2"
                )))
                .bind(token_hash(token.trim()))
                .bind(customer_id)
                .fetch_optional(&mut *conn)
                .await?
            }
        }
        (None, None) => {
            return Err(ApiError::MissingArgument("token_id".into()));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "token",
                "cannot be given with token_id: name the token one way",
            ));
        }
    };
    match (row, token_id) {
        (Some(row), _) => Ok(row),
        // Another customer's token answers like one that does not exist.
        (None, Some(id)) => Err(ApiError::not_found("authentication token", id)),
        // Never echo the secret in the message.
        (None, None) => Err(ApiError::invalid(
            "token",
            "is none of the caller's authentication tokens",
        )),
    }
}

/// Revokes one of the caller's tokens (by its id, or by the token itself), and every token
/// made with it, at once. Revoking a revoked token changes nothing. Returns the token.
pub async fn revoke_authentication_token(
    ctx: &Ctx,
    a: args::RevokeAuthenticationToken,
) -> ApiResult<AuthenticationTokenInfo> {
    let mut tx = ctx.begin_write().await?;
    let row = find_own(&mut tx, ctx.customer_id(), a.token_id, a.token.as_deref()).await?;
    let now = now_ms();
    sqlx::query(
        "WITH RECURSIVE tree(id) AS ( \
           SELECT id FROM auth_tokens WHERE id = $1 \
           UNION SELECT t.id FROM auth_tokens t JOIN tree ON t.parent_id = tree.id \
         ) \
         UPDATE auth_tokens SET revoked = $2 \
         WHERE id IN (SELECT id FROM tree) AND revoked IS NULL",
    )
    .bind(row.id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let row = find_own(&mut tx, ctx.customer_id(), Some(row.id), None).await?;
    tx.commit().await?;
    Ok(row.info(ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_hashed() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX) && looks_like_token(&a), "{a}");
        assert_eq!(a.len(), PREFIX.len() + 43);
        assert!(
            a[PREFIX.len()..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{a}"
        );
        let hash = token_hash(&a);
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&a[PREFIX.len()..]));
        assert_eq!(hash, token_hash(&a));
    }

    #[test]
    fn e_mails_are_not_tokens() {
        assert!(!looks_like_token("ext_bob@example.com"));
        assert!(!looks_like_token("alice@example.com"));
        assert!(looks_like_token("ext_abc"));
    }

    #[test]
    fn lifetimes_default_and_stay_within_the_maximum() {
        assert_eq!(lifetime(None, 3600, 86400).unwrap(), 3600);
        // A default above the maximum is the maximum.
        assert_eq!(lifetime(None, 3600, 600).unwrap(), 600);
        assert_eq!(lifetime(Some(86400), 3600, 86400).unwrap(), 86400);
        for bad in [0, -5, 86401] {
            let err = lifetime(Some(bad), 3600, 86400).unwrap_err();
            assert_eq!(err.code(), "INVALID_ARGUMENT", "{bad}");
        }
        assert!(
            lifetime(Some(86401), 3600, 86400)
                .unwrap_err()
                .to_string()
                .contains("at most 86400")
        );
    }

    #[test]
    fn a_lower_maximum_shortens_tokens_already_made() {
        assert_eq!(effective_expiry(1_000, 3_601_000, 3600), 3_601_000);
        assert_eq!(effective_expiry(1_000, 3_601_000, 600), 601_000);
        assert_eq!(effective_expiry(1_000, 3_601_000, u64::MAX), 3_601_000);
        assert_eq!(oldest_live(1_000_000, 600), 400_000);
    }

    #[test]
    fn names_are_short_and_printable() {
        assert_eq!(token_name(None).unwrap(), "");
        assert_eq!(token_name(Some(" backup ".into())).unwrap(), "backup");
        assert!(token_name(Some("x".repeat(101))).is_err());
        assert!(token_name(Some("a\nb".into())).is_err());
    }
}
