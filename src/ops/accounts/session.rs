//! The control panel's sign-in sessions, beside authentication tokens: the only module that
//! writes `panel_sessions`. The HTTP side (cookies, the forms' anti-forgery tokens) is
//! `crate::api::panel::session`.
//!
//! - **What a session is.** Signing in (with the e-mail and password the API takes, checked by
//!   `crate::api::auth::authenticate_password`) makes a session id (`secret::random_token`),
//!   sent to the browser once in a cookie. The table keeps only its hash (`secret::hash`),
//!   looked up by a unique index on every panel request, with the customer it acts as, and
//!   the session's own anti-forgery token.
//! - **Expiry.** A session ends two hours after its last request ([`IDLE`]) and twelve hours
//!   after it was made ([`ABSOLUTE`]), whichever comes first; `last_seen` is written at most
//!   once a minute, so the Jobs tab's polling does not write on every request. Ended sessions
//!   are deleted when met and at each sign-in. Signing out deletes the session. A customer
//!   keeps at most [`MAX_SESSIONS_PER_CUSTOMER`]: a new one ends the oldest.

use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::ops::Caller;
use crate::ops::accounts::secret::{hash, random_token};

/// A session ends this long after its last request.
pub const IDLE: std::time::Duration = std::time::Duration::from_secs(2 * 3600);
/// A session ends this long after it was made, however busy.
pub const ABSOLUTE: std::time::Duration = std::time::Duration::from_secs(12 * 3600);
/// The sessions a customer keeps at once; signing in again ends the oldest beyond these.
pub const MAX_SESSIONS_PER_CUSTOMER: i64 = 20;
/// How stale `last_seen` may be before a request writes it again.
const LAST_SEEN_RESOLUTION_MS: i64 = 60_000;
/// No session id is longer than this (checked before hashing what a browser sent).
const MAX_SECRET_LEN: usize = 128;

/// A session found by its cookie: who it acts as, and its anti-forgery token.
pub struct Session {
    pub caller: Caller,
    pub csrf_token: String,
}

fn ms(duration: std::time::Duration) -> i64 {
    duration.as_millis() as i64
}

/// Makes a session for `caller`; returns its id, for the cookie (shown this once). Deletes
/// the sessions that have ended, anyone's.
pub async fn create(db: &Db, caller: &Caller) -> ApiResult<String> {
    let secret = random_token();
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    sqlx::query("DELETE FROM panel_sessions WHERE last_seen < $1 OR created < $2")
        .bind(now - ms(IDLE))
        .bind(now - ms(ABSOLUTE))
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO panel_sessions (token_hash, customer_id, csrf_token, created, last_seen) \
         VALUES ($1, $2, $3, $4, $4)",
    )
    .bind(hash(&secret))
    .bind(caller.customer_id)
    .bind(random_token())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    // A customer's oldest sessions go beyond the newest few: signing in in a loop cannot
    // grow the table without bound.
    sqlx::query(
        "DELETE FROM panel_sessions WHERE customer_id = $1 AND id NOT IN \
         (SELECT id FROM panel_sessions WHERE customer_id = $1 ORDER BY id DESC LIMIT $2)",
    )
    .bind(caller.customer_id)
    .bind(MAX_SESSIONS_PER_CUSTOMER)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(secret)
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: i64,
    customer_id: i64,
    csrf_token: String,
    created: i64,
    last_seen: i64,
    customer_uuid: String,
    billing_entity_id: i64,
    is_admin: i64,
}

/// The live session a cookie names, if any (one SHA-256 and one indexed lookup). A session
/// found ended is deleted.
pub async fn find(db: &Db, secret: &str) -> ApiResult<Option<Session>> {
    if secret.is_empty() || secret.len() > MAX_SECRET_LEN {
        return Ok(None);
    }
    let row: Option<SessionRow> = sqlx::query_as(
        "SELECT s.id, s.customer_id, s.csrf_token, s.created, s.last_seen, \
         c.uuid AS customer_uuid, c.billing_entity_id, c.is_admin \
         FROM panel_sessions s JOIN customers c ON c.id = s.customer_id WHERE s.token_hash = $1",
    )
    .bind(hash(secret))
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let now = now_ms();
    if now - row.last_seen >= ms(IDLE) || now - row.created >= ms(ABSOLUTE) {
        sqlx::query("DELETE FROM panel_sessions WHERE id = $1")
            .bind(row.id)
            .execute(db.pool())
            .await?;
        return Ok(None);
    }
    if now - row.last_seen >= LAST_SEEN_RESOLUTION_MS {
        sqlx::query("UPDATE panel_sessions SET last_seen = $1 WHERE id = $2")
            .bind(now)
            .bind(row.id)
            .execute(db.pool())
            .await?;
    }
    Ok(Some(Session {
        caller: Caller {
            customer_id: row.customer_id,
            customer_uuid: row.customer_uuid,
            billing_entity_id: row.billing_entity_id,
            is_admin: row.is_admin != 0,
            token_id: None,
        },
        csrf_token: row.csrf_token,
    }))
}

/// Ends the session a cookie names (signing out).
pub async fn delete(db: &Db, secret: &str) -> ApiResult<()> {
    if secret.is_empty() || secret.len() > MAX_SECRET_LEN {
        return Ok(());
    }
    sqlx::query("DELETE FROM panel_sessions WHERE token_hash = $1")
        .bind(hash(secret))
        .execute(db.pool())
        .await
        .map_err(ApiError::from)?;
    Ok(())
}
