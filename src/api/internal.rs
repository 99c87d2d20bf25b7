//! What nodes ask each other, under `/internal/v1/`: each request carries a proof made with
//! a key derived from the cluster's secret key, bound to the node asked and to the request's
//! method, path and body, good for 30 seconds and accepted once
//! ([`crate::jobs::node_proof`]); anything else is 403.
//! Customers never call these: the node that asks has checked the customer's right already.
//!
//! - `GET /internal/v1/console/{server_uuid}`: the end of the serial console of a VM this node
//!   runs (GetConsoleLog on another node of the cluster).
//! - `GET /internal/v1/console/{server_uuid}/{kind}` with `Upgrade: extility-console`: an
//!   interactive console (`screen` or `serial`) of a VM this node runs, as raw bytes both
//!   ways after `101 Switching Protocols` (the console WebSocket on another node relays it).

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::ops::server::{
    NODE_PROOF_HEADER, NodeCall, accepts_node_call, console, console_for_node,
};
use crate::ops::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/internal/v1/console/{server_uuid}", get(console))
        .route(
            "/internal/v1/console/{server_uuid}/{kind}",
            get(console_stream),
        )
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

async fn console_stream(
    State(state): State<AppState>,
    Path((server_uuid, kind)): Path<(String, String)>,
    mut request: axum::extract::Request,
) -> Response {
    let proof = request
        .headers()
        .get(NODE_PROOF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let uri = request.uri().clone();
    let call = NodeCall {
        method: request.method().as_str(),
        path: uri.path_and_query().map_or(uri.path(), |p| p.as_str()),
        body: b"",
        proof: &proof,
    };
    if !accepts_node_call(&state, &call) {
        return refused();
    }
    let kind = match console::parse_kind(&kind) {
        Ok(kind) => kind,
        Err(err) => return (StatusCode::NOT_FOUND, format!("{err}\n")).into_response(),
    };
    let mut stream = match console::open_here(&state, &server_uuid, kind).await {
        Ok(stream) => stream,
        Err(err) => {
            return (super::error::http_status(&err), err.public_message()).into_response();
        }
    };
    let upgrade = hyper::upgrade::on(&mut request);
    tracing::info!(server = %server_uuid, kind = kind.as_str(), "serving a console to another node");
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let mut upgraded = hyper_util::rt::TokioIo::new(upgraded);
                let _ = tokio::io::copy_bidirectional(&mut upgraded, &mut stream).await;
            }
            Err(err) => tracing::debug!(error = %err, "a relayed console was never upgraded"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(axum::http::header::CONNECTION, "upgrade")
        .header(axum::http::header::UPGRADE, console::RELAY_UPGRADE)
        .body(Body::empty())
        .unwrap_or_else(|_| refused())
}

fn refused() -> Response {
    (StatusCode::FORBIDDEN, "for the nodes of this cluster\n").into_response()
}
