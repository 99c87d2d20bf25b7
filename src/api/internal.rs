//! What nodes ask each other, under `/internal/v1/`: each request carries a proof made with
//! a key derived from the cluster's secret key, bound to the node asked and to the request's
//! method, path and body, good for 30 seconds and accepted once
//! ([`crate::jobs::node_proof`]); anything else is 403.
//! Customers never call these: the node that asks has checked the customer's right already.
//!
//! - `GET /internal/v1/console/{server_uuid}`: the end of the serial console of a VM this node
//!   runs (GetConsoleLog on another node of the cluster).

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::ops::server::{NODE_PROOF_HEADER, NodeCall, console_for_node};
use crate::ops::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/internal/v1/console/{server_uuid}", get(console))
}

async fn console(
    State(state): State<AppState>,
    Path(server_uuid): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // The proof covers the body too: one sent with a GET is read (a little of it), not ignored.
    let Ok(body) = super::read_body(body).await else {
        return refused();
    };
    let proof = headers
        .get(NODE_PROOF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let call = NodeCall {
        method: method.as_str(),
        path: uri.path_and_query().map_or(uri.path(), |p| p.as_str()),
        body: &body,
        proof,
    };
    match console_for_node(&state, call, &server_uuid).await {
        None => refused(),
        Some(Ok(bytes)) => Bytes::from(bytes).into_response(),
        Some(Err(err)) => (StatusCode::NOT_FOUND, format!("{err}\n")).into_response(),
    }
}

fn refused() -> Response {
    (StatusCode::FORBIDDEN, "for the nodes of this cluster\n").into_response()
}
