//! The console WebSocket, `GET /console/ws?token=<token>`: the bytes of one interactive
//! console (RFB for `screen`, raw for `serial`) between a browser or any WebSocket client and
//! the VM, for a token GetConsoleAccess gave (`crate::ops::server::console`).
//!
//! Before the upgrade: an `Origin` that is not this server's is 403 (a page of another site
//! cannot use a token it got hold of; clients that send none are not browsers), then the token
//! is taken (unknown, used or expired: 403), the customer's place among their open consoles
//! is taken (429), and the console is opened here or relayed from the node that runs the VM.
//! Each console opened, or refused once its token was taken, is in the audit trail. The
//! connection ends when the VM's console ends (the server stopped or was destroyed), when the
//! client goes, after `--console-idle-timeout` seconds without a person's input (any byte
//! on `serial`; on `screen` keys, pointer moves and clicks, cut text, as
//! `ops::server::console_activity` frames the RFB stream), or when the client sends RFB that
//! cannot be framed.

use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::auth::ClientAddress;
use super::guard::is_own_origin;
use super::json::error_response;
use crate::error::ApiError;
use crate::ops::Via;
use crate::ops::server::console::{self, ConsoleStream, SUBPROTOCOL, Slot};
use crate::ops::server::console_activity::Activity;
use crate::ops::state::AppState;

/// The close code a console's end is told with (the WebSocket's "normal closure").
const NORMAL: u16 = 1000;
/// The close code of a console closed for idleness (an application's code).
const IDLE: u16 = 4000;
/// The close code of a console whose client sent what is not RFB (the WebSocket's "policy
/// violation").
const UNFRAMEABLE: u16 = 1008;

pub fn routes() -> Router<AppState> {
    Router::new().route("/console/ws", get(open))
}

#[derive(Deserialize)]
struct TokenQuery {
    #[serde(default)]
    token: String,
}

async fn open(
    State(state): State<AppState>,
    address: ClientAddress,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let host = headers.get(HOST).and_then(|h| h.to_str().ok());
        if !is_own_origin(origin, host, state.config.public_url.as_deref()) {
            return error_response(&ApiError::PermissionDenied(format!(
                "a console is opened from this server's own pages only, not from {origin}"
            )));
        }
    }
    let grant = match console::redeem(&state, &query.token).await {
        Ok(grant) => grant,
        Err(err) => return error_response(&err),
    };
    let opened = open_console(&state, &grant).await;
    let address = address.origin(Via::Json).address;
    console::record_opened(&state, &grant, address, opened.as_ref().err()).await;
    let (customer_slot, stream) = match opened {
        Ok(opened) => opened,
        Err(err) => return error_response(&err),
    };
    let idle = Duration::from_secs(state.config.console_idle_timeout.max(1));
    let watch = Watch {
        idle,
        activity: Activity::new(grant.kind),
        kind: grant.kind.as_str(),
        server_id: grant.server_id,
    };
    upgrade
        .protocols([SUBPROTOCOL])
        .on_upgrade(move |socket| carry(socket, stream, customer_slot, watch))
        .into_response()
}

async fn open_console(
    state: &AppState,
    grant: &console::ConsoleGrant,
) -> crate::error::ApiResult<(Slot, ConsoleStream)> {
    let slot = state.consoles.take_customer(grant.customer_id)?;
    let stream = console::open_stream(state, grant).await?;
    Ok((slot, stream))
}

/// What the client's side of a console is watched for: idleness, and what it sends.
struct Watch {
    idle: Duration,
    activity: Activity,
    kind: &'static str,
    server_id: i64,
}

/// Carries bytes both ways until either end goes or the client is idle too long; the slot is
/// the customer's place among their open consoles, given back at the end.
async fn carry(socket: WebSocket, stream: ConsoleStream, _slot: Slot, watch: Watch) {
    let Watch {
        idle,
        mut activity,
        kind,
        server_id,
    } = watch;
    let (mut to_client, mut from_client) = socket.split();
    let (mut from_vm, mut to_vm) = tokio::io::split(stream);
    let client_side = async {
        let mut idle_at = tokio::time::Instant::now() + idle;
        loop {
            let message = match tokio::time::timeout_at(idle_at, from_client.next()).await {
                Err(_) => return (IDLE, "closed after a time without input"),
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => {
                    return (NORMAL, "the client closed the console");
                }
                Ok(Some(Ok(message))) => message,
            };
            let bytes: &[u8] = match &message {
                Message::Binary(bytes) => bytes,
                Message::Text(text) => text.as_bytes(),
                _ => continue,
            };
            match activity.feed(bytes) {
                Ok(true) => idle_at = tokio::time::Instant::now() + idle,
                Ok(false) => {}
                Err(unframeable) => {
                    tracing::warn!(
                        server_id,
                        kind,
                        reason = %unframeable,
                        "closing a console whose client sent what cannot be framed"
                    );
                    return (UNFRAMEABLE, "the client sent what is not RFB");
                }
            }
            let written = to_vm.write_all(bytes).await;
            if written.is_err() {
                return (NORMAL, "the console ended");
            }
        }
    };
    let vm_side = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match from_vm.read(&mut buffer).await {
                Ok(0) | Err(_) => return (NORMAL, "the console ended: the server stopped"),
                Ok(n) => {
                    let bytes = bytes::Bytes::copy_from_slice(&buffer[..n]);
                    if to_client.send(Message::Binary(bytes)).await.is_err() {
                        return (NORMAL, "the client went away");
                    }
                }
            }
        }
    };
    let (code, reason) = tokio::select! {
        end = client_side => end,
        end = vm_side => end,
    };
    let _ = to_client
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
    let _ = to_client.close().await;
}
