//! What nodes ask each other, under `/internal/v1/`: each request carries a proof made with
//! the cluster's secret key ([`crate::jobs::JobQueue::node_proof`]) for that one request and a
//! short time; anything else is 403. Customers never call these: the node that asks has
//! checked the customer's right already.
//!
//! - `GET /internal/v1/console/{server_uuid}?expires=MS`: the end of the serial console of a VM
//!   this node runs (GetConsoleLog on another node of the cluster).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::ops::server::{NODE_PROOF_HEADER, console_here, console_purpose};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/internal/v1/console/{server_uuid}", get(console))
}

#[derive(Deserialize)]
struct Expiry {
    expires: i64,
}

async fn console(
    State(state): State<AppState>,
    Path(server_uuid): Path<String>,
    Query(expiry): Query<Expiry>,
    headers: HeaderMap,
) -> Response {
    let proof = headers
        .get(NODE_PROOF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !state
        .jobs
        .check_node_proof(&console_purpose(&server_uuid), expiry.expires, proof)
    {
        return (StatusCode::FORBIDDEN, "for the nodes of this cluster\n").into_response();
    }
    match console_here(&state, &server_uuid).await {
        Ok(bytes) => Bytes::from(bytes).into_response(),
        Err(err) => (StatusCode::NOT_FOUND, format!("{err}\n")).into_response(),
    }
}
