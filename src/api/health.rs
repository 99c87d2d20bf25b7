//! Probes for operators and load balancers. `/health` says whether the process serves and
//! what it depends on that is down (always 200 while it answers: restarting a node does not
//! bring its database back); `/ready` is 200 when this node can serve calls and 503 with
//! `Retry-After` when it cannot (its database out of reach), for load balancers and
//! orchestrators to send calls elsewhere meanwhile.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::RETRY_AFTER_UNAVAILABLE;
use crate::ops::state::AppState;

/// How long a check's outcome is reused: probes cost the database one statement per second.
const CHECK_MAX_AGE: Duration = Duration::from_secs(1);
/// How long a check waits for the database's answer.
const CHECK_WITHIN: Duration = Duration::from_secs(2);

/// `GET /health`: `{"status": "ok", "database": "ok"}`, or `"status": "degraded"` with
/// `"database": "unavailable: <why>"`.
pub async fn health(State(state): State<AppState>) -> Response {
    let database = state.db.check(CHECK_MAX_AGE, CHECK_WITHIN).await;
    let body = match &database {
        Ok(()) => json!({"status": "ok", "database": "ok"}),
        Err(why) => json!({"status": "degraded", "database": format!("unavailable: {why}")}),
    };
    Json(body).into_response()
}

/// `GET /ready`: 200 `ready`, or 503 with `Retry-After` and what is down.
pub async fn ready(State(state): State<AppState>) -> Response {
    match state.db.check(CHECK_MAX_AGE, CHECK_WITHIN).await {
        Ok(()) => "ready".into_response(),
        Err(why) => {
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: the database is unavailable: {why}"),
            )
                .into_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(RETRY_AFTER_UNAVAILABLE),
            );
            response
        }
    }
}
