//! Interactive consoles: GetConsoleAccess, and what the console WebSocket (`api::console`)
//! asks of the operation layer: redeeming a token, the limits on open consoles, the audit row
//! of each console opened, and the byte stream to the VM's console, on this node or relayed
//! from the node that runs it. The only module that writes `console_tokens`.
//!
//! A token is 256 random bits; only its SHA-256 is stored, with the customer, the server, the
//! kind and the adapter that asked for it. It is good for one connection made within
//! [`TOKEN_LIFETIME_MS`]: redeeming marks it used in the same conditional update that checks
//! it, so two connections racing with one token get one console.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{NODE_PROOF_HEADER, ServerStatus, live_node_address, own_server};
use crate::db::now_ms;
use crate::error::{ApiError, ApiResult};
use crate::hypervisor::ConsoleKind;
use crate::jobs::node_proof::Request as NodeRequest;
use crate::ops::audit::Via;
use crate::ops::state::AppState;
use crate::ops::wire::Timestamp;
use crate::ops::{Ctx, args};
use crate::wire_struct;

/// How long a token waits for its connection.
pub const TOKEN_LIFETIME_MS: i64 = 60_000;
/// What a console token starts with (so a leaked one is recognisable as what it is).
const TOKEN_PREFIX: &str = "xcon_";
/// Used and expired tokens are deleted this long after their expiry.
const KEEP_SPENT_MS: i64 = 3_600_000;
/// The WebSocket subprotocol the endpoint speaks when a client asks for one (noVNC's).
pub const SUBPROTOCOL: &str = "binary";
/// What the node running a VM answers a relayed console request with (`Upgrade:`).
pub const RELAY_UPGRADE: &str = "extility-console";

wire_struct! {
    /// Access to one interactive console of a running server. Open a WebSocket to
    /// `url?token=<token>` within 60 seconds (`expires`): the token works for one connection,
    /// by the customer who asked, to this server. `kind` `screen` carries RFB (VNC: a stock
    /// noVNC client works), `serial` the raw bytes of the first serial port.
    pub struct ConsoleAccess as "ConsoleAccess" {
        pub server_id: i64,
        pub kind: String,
        pub url: String,
        pub token: String,
        pub expires: Timestamp,
    }
}

/// `screen` or `serial`, or INVALID_ARGUMENT.
pub fn parse_kind(kind: &str) -> ApiResult<ConsoleKind> {
    ConsoleKind::parse(kind.trim())
        .ok_or_else(|| ApiError::invalid("kind", "must be 'screen' or 'serial'"))
}

pub async fn get_console_access(ctx: &Ctx, a: args::GetConsoleAccess) -> ApiResult<ConsoleAccess> {
    let kind = parse_kind(&a.kind)?;
    let server = {
        let mut conn = ctx.state.db.pool().acquire().await?;
        own_server(&mut conn, ctx.customer_id(), a.server_id).await?
    };
    require_running(server.id, server.status)?;
    // Refused here too, with the reason, rather than only when the WebSocket opens.
    ctx.state.consoles.check_customer(ctx.customer_id())?;
    let secret: [u8; 32] = rand::random();
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    let now = now_ms();
    let expires = now + TOKEN_LIFETIME_MS;
    let mut tx = ctx.begin_write().await?;
    sqlx::query("DELETE FROM console_tokens WHERE expires_at < $1")
        .bind(now - KEEP_SPENT_MS)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO console_tokens (token_hash, customer_id, server_id, kind, via, created, \
         expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(token_hash(&token))
    .bind(ctx.customer_id())
    .bind(server.id)
    .bind(kind.as_str())
    .bind(ctx.origin.via.as_str())
    .bind(now)
    .bind(expires)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ConsoleAccess {
        server_id: server.id,
        kind: kind.as_str().to_string(),
        url: websocket_url(&ctx.state.base_url()),
        token,
        expires: Timestamp(expires),
    })
}

fn require_running(server_id: i64, status: i64) -> ApiResult<()> {
    if status == ServerStatus::Running.code() {
        return Ok(());
    }
    Err(ApiError::Conflict(format!(
        "server {server_id} is {}: only a running server has a console",
        ServerStatus::describe(status)
    )))
}

/// The console WebSocket's URL at `base` (`http://host:port` becomes `ws://host:port/...`).
pub fn websocket_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let rest = base
        .strip_prefix("https://")
        .map(|r| format!("wss://{r}"))
        .or_else(|| base.strip_prefix("http://").map(|r| format!("ws://{r}")))
        .unwrap_or_else(|| base.to_string());
    format!("{rest}/console/ws")
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// What a redeemed token grants: one console of one server, for its customer.
#[derive(Debug, Clone)]
pub struct ConsoleGrant {
    pub customer_id: i64,
    pub server_id: i64,
    pub server_uuid: String,
    /// The node that runs the VM (none: this one).
    pub node: Option<String>,
    pub kind: ConsoleKind,
    /// The adapter GetConsoleAccess was called through: the audit row's `via`.
    pub via: Via,
}

/// The audit row of a console opened with `grant` (or refused once its token was taken).
pub async fn record_opened(
    state: &AppState,
    grant: &ConsoleGrant,
    address: Option<std::net::IpAddr>,
    refused: Option<&ApiError>,
) {
    let opened = crate::ops::audit::OpenedConsole {
        customer_id: grant.customer_id,
        server_id: grant.server_id,
        kind: grant.kind,
        via: grant.via,
    };
    crate::ops::audit::record_console(state, opened, address, refused).await;
}

/// Takes a token for its one connection: unknown, used and expired tokens are refused alike
/// (PERMISSION_DENIED), and so is a token of a server that no longer runs.
pub async fn redeem(state: &AppState, token: &str) -> ApiResult<ConsoleGrant> {
    let refused = || {
        ApiError::PermissionDenied(
            "this console token is unknown, already used or expired: ask GetConsoleAccess for \
             another"
                .into(),
        )
    };
    if !token.starts_with(TOKEN_PREFIX) || token.len() > 100 {
        return Err(refused());
    }
    let hash = token_hash(token);
    let now = now_ms();
    let taken = sqlx::query(
        "UPDATE console_tokens SET used_at = $1 \
         WHERE token_hash = $2 AND used_at IS NULL AND expires_at >= $1",
    )
    .bind(now)
    .bind(&hash)
    .execute(state.db.pool())
    .await?;
    if taken.rows_affected() != 1 {
        return Err(refused());
    }
    let mut conn = state.db.pool().acquire().await?;
    let (customer_id, server_id, kind, via): (i64, i64, String, String) = sqlx::query_as(
        "SELECT customer_id, server_id, kind, via FROM console_tokens WHERE token_hash = $1",
    )
    .bind(&hash)
    .fetch_one(&mut *conn)
    .await?;
    let server = own_server(&mut conn, customer_id, server_id).await?;
    require_running(server.id, server.status)?;
    Ok(ConsoleGrant {
        customer_id,
        server_id,
        server_uuid: server.uuid,
        node: server.node,
        kind: parse_kind(&kind)?,
        via: match via.as_str() {
            "soap" => Via::Soap,
            "panel" => Via::Panel,
            _ => Via::Json,
        },
    })
}

/// The consoles open on this node, by customer (on the node that took the WebSocket) and by VM
/// (on the node that runs it), under the limits `--max-consoles-per-customer` and
/// `--max-consoles-per-server`; a serial port has one user at a time (QEMU's socket serves
/// one client).
pub struct OpenConsoles {
    counts: Mutex<Counts>,
    per_customer: usize,
    per_server: usize,
}

#[derive(Default)]
struct Counts {
    customers: HashMap<i64, usize>,
    servers: HashMap<String, usize>,
    serial: HashMap<String, usize>,
}

/// One place among the open consoles, given back when dropped.
pub struct Slot {
    consoles: Arc<OpenConsoles>,
    held: Held,
}

enum Held {
    Customer(i64),
    Server(String, ConsoleKind),
}

impl OpenConsoles {
    pub fn new(per_customer: usize, per_server: usize) -> Arc<OpenConsoles> {
        Arc::new(OpenConsoles {
            counts: Mutex::new(Counts::default()),
            per_customer: per_customer.max(1),
            per_server: per_server.max(1),
        })
    }

    fn customer_full(&self, counts: &Counts, customer_id: i64) -> ApiResult<()> {
        let open = counts.customers.get(&customer_id).copied().unwrap_or(0);
        if open >= self.per_customer {
            return Err(ApiError::LimitExceeded(format!(
                "you have {open} consoles open, the most allowed at once on this node: close \
                 one first"
            )));
        }
        Ok(())
    }

    /// Whether the customer may open one more console (GetConsoleAccess asks).
    pub fn check_customer(&self, customer_id: i64) -> ApiResult<()> {
        self.customer_full(&self.counts.lock().unwrap(), customer_id)
    }

    /// A place among the customer's consoles, or LIMIT_EXCEEDED.
    pub fn take_customer(self: &Arc<Self>, customer_id: i64) -> ApiResult<Slot> {
        let mut counts = self.counts.lock().unwrap();
        self.customer_full(&counts, customer_id)?;
        *counts.customers.entry(customer_id).or_default() += 1;
        Ok(Slot {
            consoles: self.clone(),
            held: Held::Customer(customer_id),
        })
    }

    /// A place among a VM's consoles, or LIMIT_EXCEEDED.
    pub fn take_server(self: &Arc<Self>, server_uuid: &str, kind: ConsoleKind) -> ApiResult<Slot> {
        let mut counts = self.counts.lock().unwrap();
        let open = counts.servers.get(server_uuid).copied().unwrap_or(0);
        if open >= self.per_server {
            return Err(ApiError::LimitExceeded(format!(
                "this server has {open} consoles open, the most allowed at once: close one first"
            )));
        }
        if kind == ConsoleKind::Serial && counts.serial.get(server_uuid).copied().unwrap_or(0) > 0 {
            return Err(ApiError::LimitExceeded(
                "this server's serial console is open elsewhere: a serial port has one user at \
                 a time"
                    .into(),
            ));
        }
        *counts.servers.entry(server_uuid.to_string()).or_default() += 1;
        if kind == ConsoleKind::Serial {
            *counts.serial.entry(server_uuid.to_string()).or_default() += 1;
        }
        Ok(Slot {
            consoles: self.clone(),
            held: Held::Server(server_uuid.to_string(), kind),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.consoles.counts.lock().unwrap();
        fn give_back<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
            if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
        match &self.held {
            Held::Customer(id) => give_back(&mut counts.customers, id),
            Held::Server(uuid, kind) => {
                give_back(&mut counts.servers, uuid);
                if *kind == ConsoleKind::Serial {
                    give_back(&mut counts.serial, uuid);
                }
            }
        }
    }
}

/// A byte stream both ways.
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// A console's bytes: the VM's socket, or the relay from the node that runs it. Holds the
/// VM's place among its open consoles while it lives.
pub struct ConsoleStream {
    io: Box<dyn Duplex>,
    _slot: Option<Slot>,
}

impl AsyncRead for ConsoleStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConsoleStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}

/// The granted console's bytes: here when this node runs the VM (or nodes share a data
/// directory), else relayed from the node that runs it.
pub async fn open_stream(state: &AppState, grant: &ConsoleGrant) -> ApiResult<ConsoleStream> {
    let elsewhere = match grant.node.as_deref() {
        Some(node) if node != state.jobs.node_id() => {
            let mut conn = state.db.pool().acquire().await?;
            live_node_address(&mut conn, state, node)
                .await?
                .map(|address| (node.to_string(), address))
        }
        _ => None,
    };
    match elsewhere {
        Some((node, address)) => relayed(state, &node, &address, grant).await,
        None => open_here(state, &grant.server_uuid, grant.kind).await,
    }
}

/// The console of a VM this node runs: its socket, under the VM's limit.
pub async fn open_here(
    state: &AppState,
    server_uuid: &str,
    kind: ConsoleKind,
) -> ApiResult<ConsoleStream> {
    let slot = state.consoles.take_server(server_uuid, kind)?;
    let hypervisor = state.hypervisor.clone();
    let uuid = server_uuid.to_string();
    let socket =
        tokio::task::spawn_blocking(move || hypervisor.console_socket(&uuid, kind)).await??;
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .map_err(|e| ApiError::Hypervisor(format!("connecting to the VM's console: {e}")))?;
    Ok(ConsoleStream {
        io: Box::new(stream),
        _slot: Some(slot),
    })
}

/// The path a node asks another for the console of a VM it runs (an HTTP upgrade to raw bytes).
pub fn relay_path(server_uuid: &str, kind: ConsoleKind) -> String {
    format!("/internal/v1/console/{server_uuid}/{}", kind.as_str())
}

/// Opens the console on the node that runs the VM, proving with the cluster key that the
/// request comes from a node (the customer's right was checked here, with the token).
async fn relayed(
    state: &AppState,
    node: &str,
    address: &str,
    grant: &ConsoleGrant,
) -> ApiResult<ConsoleStream> {
    let path = relay_path(&grant.server_uuid, grant.kind);
    let proof = state.jobs.node_proof(&NodeRequest {
        node,
        method: "GET",
        path: &path,
        body: b"",
    })?;
    let failed = |why: String| ApiError::Hypervisor(format!("relaying from node {node}: {why}"));
    let url = url::Url::parse(address).map_err(|e| failed(e.to_string()))?;
    if url.scheme() != "http" {
        return Err(failed(
            "consoles are relayed over plain HTTP between nodes".into(),
        ));
    }
    let host = url.host_str().ok_or_else(|| failed("no host".into()))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port)),
    )
    .await
    .map_err(|_| failed("timed out connecting".into()))?
    .map_err(|e| failed(e.to_string()))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| failed(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            tracing::debug!(error = %err, "a relayed console's connection ended");
        }
    });
    let request = axum::http::Request::get(&path)
        .header(axum::http::header::HOST, authority)
        .header(axum::http::header::CONNECTION, "upgrade")
        .header(axum::http::header::UPGRADE, RELAY_UPGRADE)
        .header(NODE_PROOF_HEADER, proof)
        .body(axum::body::Body::empty())
        .map_err(|e| failed(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    if response.status() != axum::http::StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status();
        let body = axum::body::to_bytes(axum::body::Body::new(response.into_body()), 4096)
            .await
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        return Err(match status {
            axum::http::StatusCode::TOO_MANY_REQUESTS => ApiError::LimitExceeded(body),
            axum::http::StatusCode::CONFLICT => ApiError::Conflict(body),
            _ => failed(format!("{status}: {body}")),
        });
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|e| failed(e.to_string()))?;
    Ok(ConsoleStream {
        io: Box::new(hyper_util::rt::TokioIo::new(upgraded)),
        _slot: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls_follow_the_base_url() {
        assert_eq!(
            websocket_url("http://127.0.0.1:8080"),
            "ws://127.0.0.1:8080/console/ws"
        );
        assert_eq!(
            websocket_url("https://cloud.example.com/"),
            "wss://cloud.example.com/console/ws"
        );
    }

    #[test]
    fn limits_count_open_consoles_and_give_places_back() {
        let consoles = OpenConsoles::new(2, 3);
        let a = consoles.take_customer(1).unwrap();
        let _b = consoles.take_customer(1).unwrap();
        assert!(matches!(
            consoles.take_customer(1),
            Err(ApiError::LimitExceeded(_))
        ));
        assert!(consoles.take_customer(2).is_ok(), "per customer");
        drop(a);
        assert!(consoles.check_customer(1).is_ok());

        let serial = consoles.take_server("vm", ConsoleKind::Serial).unwrap();
        assert!(consoles.take_server("vm", ConsoleKind::Serial).is_err());
        let _s1 = consoles.take_server("vm", ConsoleKind::Screen).unwrap();
        let _s2 = consoles.take_server("vm", ConsoleKind::Screen).unwrap();
        assert!(consoles.take_server("vm", ConsoleKind::Screen).is_err());
        drop(serial);
        assert!(consoles.take_server("vm", ConsoleKind::Serial).is_ok());
    }
}
