//! The metadata service a server's VM reads at first boot: an XML document with its initial
//! user and password, name and uuid, and SSH keys (`/metadata/v1/server.xml`), and the same
//! as a cloud-init NoCloud datasource (`/metadata/v1/nocloud/<file>`, see [`super::nocloud`]).
//! The VM proves who it is with the secret its hypervisor handed it (only the secret's hash is
//! stored), or on a tenant network by its NIC's address; nothing else can read it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use quick_xml::escape::escape;

use super::nocloud::{self, NoCloudFile};
use crate::ops::server::metadata::{self, ServerMetadata};
use crate::ops::state::AppState;

/// Where the documents are, under the API's and the guests' listeners.
pub const DOCUMENT_PATH: &str = "/metadata/v1/server.xml";
pub const NOCLOUD_PATH: &str = "/metadata/v1/nocloud/{file}";

/// One of the documents a VM may read.
#[derive(Debug, Clone, Copy)]
enum Document {
    ServerXml,
    NoCloud(NoCloudFile),
}

impl Document {
    fn nocloud(file: &str) -> Option<Document> {
        NoCloudFile::from_name(file).map(Document::NoCloud)
    }
}

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

/// The metadata routes of the API's own listener: by the VM's secret only (the forward of a
/// confined VM's network adds it).
pub fn api_routes() -> Router<AppState> {
    Router::new()
        .route(DOCUMENT_PATH, get(serve_xml))
        .route(NOCLOUD_PATH, get(serve_nocloud))
}

async fn serve_xml(State(state): State<AppState>, headers: HeaderMap) -> Response {
    serve_by_token(&state, &headers, Document::ServerXml).await
}

async fn serve_nocloud(
    State(state): State<AppState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    match Document::nocloud(&file) {
        Some(document) => serve_by_token(&state, &headers, document).await,
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn serve_by_token(state: &AppState, headers: &HeaderMap, document: Document) -> Response {
    let Some(token) = token(headers).filter(|t| !t.is_empty()) else {
        return (StatusCode::UNAUTHORIZED, "a metadata token is required\n").into_response();
    };
    render(document, metadata::for_token(state, token).await)
}

/// Connections one guest (one NIC) may hold open at once. There is no bound across guests: a
/// count shared by several VMs would let one customer's VMs fill it for everyone.
const CONNECTIONS_PER_GUEST: usize = 8;
/// How long one guest connection may last, request and answer.
const GUEST_CONNECTION_TIME: Duration = Duration::from_secs(30);

/// Serves guests' metadata requests on `listener` until `stop`. HTTP/1 only, with
/// half-closed connections answered (`printf 'GET ...' | nc` shuts its side when its input
/// ends, which axum's server takes for a client that left), a bounded number of connections
/// per guest and a bounded time for each.
///
/// A guest is known by its NIC: the address its connection comes from on the VLAN's gateway
/// address it arrived at (the redirect of 169.254.169.254 keeps both). The tap's frame
/// admission lets a NIC send from its own address only, so one VM cannot take another's
/// share, and the number of shares is the number of NICs on this node.
pub async fn serve_guests(listener: TcpListener, state: AppState, stop: CancellationToken) {
    let router = guest_router(state);
    let per_guest = PerGuest::new(CONNECTIONS_PER_GUEST);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "accepting a guest's metadata connection failed");
                continue;
            }
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        // Beyond the bound, a connection is closed at once.
        let Some(guest_slot) = per_guest.take((local.ip(), peer.ip())) else {
            continue;
        };
        let router = router.clone();
        tokio::spawn(async move {
            let service = service_fn(move |mut request: axum::extract::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.extensions_mut().insert(ArrivedAt(local));
                router.clone().oneshot(request.map(axum::body::Body::new))
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(GUEST_CONNECTION_TIME, connection).await;
            drop(guest_slot);
        });
    }
}

/// A guest's NIC: the gateway address its connection arrived at, and its own address.
type Guest = (IpAddr, IpAddr);

/// Counts the connections open from each guest, up to a limit.
#[derive(Clone)]
struct PerGuest {
    limit: usize,
    open: Arc<std::sync::Mutex<HashMap<Guest, usize>>>,
}

/// One connection counted in [`PerGuest`] until dropped.
struct GuestSlot {
    guest: Guest,
    of: PerGuest,
}

impl PerGuest {
    fn new(limit: usize) -> Self {
        PerGuest {
            limit,
            open: Arc::default(),
        }
    }

    /// A slot for one more connection from `guest`, unless it has `limit` open.
    fn take(&self, guest: Guest) -> Option<GuestSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(guest).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(GuestSlot {
            guest,
            of: self.clone(),
        })
    }
}

impl Drop for GuestSlot {
    fn drop(&mut self) {
        let mut open = self.of.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.guest) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.guest);
            }
        }
    }
}

/// What guests on tenant networks reach at 169.254.169.254:80 (this node's
/// `--metadata-port`): the metadata document and nothing else of the API.
pub fn guest_router(state: AppState) -> Router {
    Router::new()
        .route(DOCUMENT_PATH, get(serve_guest_xml))
        .route(NOCLOUD_PATH, get(serve_guest_nocloud))
        .with_state(state)
}

/// Where a guest's connection came from and arrived.
struct GuestConnection {
    peer: SocketAddr,
    local: SocketAddr,
}

async fn serve_guest_xml(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(ArrivedAt(local)): Extension<ArrivedAt>,
    headers: HeaderMap,
) -> Response {
    let connection = GuestConnection { peer, local };
    serve_guest(&state, &connection, &headers, Document::ServerXml).await
}

async fn serve_guest_nocloud(
    State(state): State<AppState>,
    Path(file): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(ArrivedAt(local)): Extension<ArrivedAt>,
    headers: HeaderMap,
) -> Response {
    let Some(document) = Document::nocloud(&file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let connection = GuestConnection { peer, local };
    serve_guest(&state, &connection, &headers, document).await
}

/// A document for a guest: by its secret when it sends one, else by the address its
/// connection comes from (its NIC's, which its tap cannot forge).
async fn serve_guest(
    state: &AppState,
    connection: &GuestConnection,
    headers: &HeaderMap,
    document: Document,
) -> Response {
    match token(headers).filter(|t| !t.is_empty()) {
        Some(token) => render(document, metadata::for_token(state, token).await),
        None => {
            let address = connection.peer.ip().to_canonical().to_string();
            let arrived_at = connection.local.ip().to_canonical().to_string();
            render(
                document,
                metadata::for_address(state, &address, &arrived_at).await,
            )
        }
    }
}

/// The address on this host a guest's connection reached (its VLAN's gateway, after the
/// redirect of 169.254.169.254).
#[derive(Clone, Copy)]
struct ArrivedAt(SocketAddr);

fn render(document: Document, found: crate::error::ApiResult<Option<ServerMetadata>>) -> Response {
    match found {
        Ok(Some(server)) => match document {
            Document::ServerXml => (
                [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
                server_xml(&server),
            )
                .into_response(),
            Document::NoCloud(file) => (
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                nocloud::render(file, &server),
            )
                .into_response(),
        },
        Ok(None) => (
            StatusCode::FORBIDDEN,
            "no server of this metadata token or address\n",
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, error_detail = ?err, "metadata lookup failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The Extility document.
fn server_xml(server: &ServerMetadata) -> String {
    let text = |v: &Option<String>| escape(v.as_deref().unwrap_or("")).into_owned();
    let keys = if server.ssh_keys.is_empty() {
        "  <ssh-public-keys/>\n".to_string()
    } else {
        let mut keys = "  <ssh-public-keys>\n".to_string();
        for key in &server.ssh_keys {
            keys.push_str(&format!(
                "    <ssh-public-key>{}</ssh-public-key>\n",
                escape(key.as_str())
            ));
        }
        keys + "  </ssh-public-keys>\n"
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <server-metadata xmlns=\"http://extility.flexiant.com/metadata\">\n\
         \x20 <server-uuid>{}</server-uuid>\n\
         \x20 <server-name>{}</server-name>\n\
         \x20 <initial-user>{}</initial-user>\n\
         \x20 <initial-password>{}</initial-password>\n\
         {keys}\
         </server-metadata>\n",
        escape(server.uuid.as_str()),
        escape(server.name.as_str()),
        text(&server.initial_user),
        text(&server.initial_password),
    )
}

#[cfg(test)]
mod tests {
    use super::PerGuest;

    #[test]
    fn one_guest_gets_at_most_its_share_and_others_are_unaffected() {
        let per_guest = PerGuest::new(2);
        let gateway = "10.64.0.1".parse().unwrap();
        let (a, b) = ("10.64.0.10".parse().unwrap(), "10.64.0.11".parse().unwrap());
        let first = per_guest.take((gateway, a)).unwrap();
        let _second = per_guest.take((gateway, a)).unwrap();
        assert!(
            per_guest.take((gateway, a)).is_none(),
            "a third from one guest is refused"
        );
        assert!(
            per_guest.take((gateway, b)).is_some(),
            "another guest still gets one"
        );
        // The same address on another VLAN (another gateway) is another NIC.
        let other_vlan = "10.64.1.1".parse().unwrap();
        assert!(per_guest.take((other_vlan, a)).is_some());
        drop(first);
        assert!(
            per_guest.take((gateway, a)).is_some(),
            "a closed connection frees its slot"
        );
    }

    /// Many guests at their limit at once (more than the old node-wide bound of 256
    /// connections): each still gets its share.
    #[test]
    fn no_count_crosses_guests() {
        let per_guest = PerGuest::new(8);
        let gateway = "10.64.0.1".parse().unwrap();
        let mut held = Vec::new();
        for host in 0..64u8 {
            let guest = std::net::IpAddr::from([10, 64, 1, host]);
            for _ in 0..8 {
                held.push(per_guest.take((gateway, guest)).expect("its share"));
            }
            assert!(per_guest.take((gateway, guest)).is_none());
        }
        assert_eq!(held.len(), 512);
    }
}
