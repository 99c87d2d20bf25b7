//! The metadata service a server's VM reads at first boot: an XML document with its initial
//! user and password, name and uuid, and SSH keys. The VM proves who it is with the secret its
//! hypervisor handed it (only the secret's hash is stored); nothing else can read it.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use quick_xml::escape::escape;

use crate::ops::server::metadata;
use crate::state::AppState;

/// The header carrying the VM's secret (`Authorization: Bearer <secret>` works too).
pub const TOKEN_HEADER: &str = "x-extility-metadata-token";

fn token(headers: &HeaderMap) -> Option<&str> {
    if let Some(t) = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()) {
        return Some(t.trim());
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// `GET /metadata/v1/server.xml`
pub async fn serve(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(token) = token(&headers).filter(|t| !t.is_empty()) else {
        return (StatusCode::UNAUTHORIZED, "a metadata token is required\n").into_response();
    };
    match metadata::for_token(&state.db, token).await {
        Ok(Some(row)) => {
            let text = |v: &Option<String>| escape(v.as_deref().unwrap_or("")).into_owned();
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
                 <server-metadata xmlns=\"http://extility.flexiant.com/metadata\">\n\
                 \x20 <server-uuid>{}</server-uuid>\n\
                 \x20 <server-name>{}</server-name>\n\
                 \x20 <initial-user>{}</initial-user>\n\
                 \x20 <initial-password>{}</initial-password>\n\
                 \x20 <ssh-public-keys/>\n\
                 </server-metadata>\n",
                escape(row.uuid.as_str()),
                escape(row.name.as_str()),
                text(&row.initial_user),
                text(&row.initial_password),
            );
            (
                [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
                xml,
            )
                .into_response()
        }
        Ok(None) => (StatusCode::FORBIDDEN, "unknown metadata token\n").into_response(),
        Err(err) => {
            tracing::error!(error = %err, error_detail = ?err, "metadata lookup failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
