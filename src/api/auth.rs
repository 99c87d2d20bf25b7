//! HTTP Basic authentication of customers: the credentials are read from the request and
//! checked by the operation layer (`crate::ops::credentials`).

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine;

use crate::error::{ApiError, ApiResult};
use crate::ops::{Caller, Origin, audit, credentials};
use crate::state::AppState;

/// Reads `Authorization: Basic ...` into an e-mail and a password.
fn basic_credentials(headers: &HeaderMap) -> ApiResult<(String, String)> {
    let value = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthenticated)?;
    let (scheme, encoded) = value
        .trim()
        .split_once(' ')
        .ok_or(ApiError::Unauthenticated)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ApiError::Unauthenticated);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| ApiError::Unauthenticated)?;
    let decoded = String::from_utf8(decoded).map_err(|_| ApiError::Unauthenticated)?;
    let (email, password) = decoded.split_once(':').ok_or(ApiError::Unauthenticated)?;
    Ok((email.to_string(), password.to_string()))
}

/// Who is calling, from the request's Basic credentials. Credentials that were given and are
/// wrong are a failed login for the audit trail (no credentials at all are not a login).
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    origin: Origin,
) -> ApiResult<Caller> {
    let (email, password) = basic_credentials(headers)?;
    let caller = credentials::authenticate(state, &email, &password).await;
    if let Err(ApiError::Unauthenticated) = caller {
        audit::failed_login(state, &email, origin);
    }
    caller
}

/// The header a 401 carries.
pub const WWW_AUTHENTICATE: &str = "Basic realm=\"extility\", charset=\"UTF-8\"";
