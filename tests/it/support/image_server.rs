//! An HTTP or HTTPS server inside the test process that FetchDisk fetches from (files, Basic
//! auth, redirects, Range, paced and broken transfers, endless zeros).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use bytes::Bytes;

/// How a file is served.
#[derive(Clone, Default)]
pub struct Served {
    pub data: Bytes,
    /// Basic credentials the file needs.
    pub auth: Option<(String, String)>,
    /// Send `chunk` bytes, then wait `pause`, and so on (a slow link).
    pub pace: Option<(usize, Duration)>,
    /// On the first request only: send this many bytes, then break the connection.
    pub break_first_after: Option<usize>,
    /// On every request: send at most this many bytes of the response, then break the
    /// connection (a resumed request then gets the next ones).
    pub break_every_after: Option<usize>,
}

#[derive(Clone)]
enum Entry {
    File(Served),
    Redirect(String),
}

/// A request the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    /// The query string, without its `?`.
    pub query: Option<String>,
    pub authorization: Option<String>,
    pub range: Option<String>,
}

#[derive(Default)]
struct Shared {
    entries: Mutex<HashMap<String, Entry>>,
    seen: Mutex<Vec<Seen>>,
    requests_for: Mutex<HashMap<String, usize>>,
    bytes_sent: AtomicU64,
}

/// An HTTP (or HTTPS) server on 127.0.0.1 serving what the test puts in it.
#[derive(Clone)]
pub struct ImageServer {
    pub addr: SocketAddr,
    scheme: &'static str,
    shared: Arc<Shared>,
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/zeros/{size}", get(zeros))
        .route("/{*path}", get(serve))
        .with_state(shared)
}

impl ImageServer {
    pub async fn start() -> ImageServer {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(bind: &str) -> ImageServer {
        let shared = Arc::new(Shared::default());
        let app = router(shared.clone());
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        ImageServer {
            addr,
            scheme: "http",
            shared,
        }
    }

    /// The same server over HTTPS, presenting `identity`'s certificate.
    pub async fn start_tls_on(bind: &str, identity: &super::tls::ServerIdentity) -> ImageServer {
        let shared = Arc::new(Shared::default());
        let app = router(shared.clone());
        let listener = std::net::TcpListener::bind(bind).unwrap();
        let addr = listener.local_addr().unwrap();
        let config = axum_server::tls_rustls::RustlsConfig::from_config(identity.server_config());
        let server = axum_server::from_tcp_rustls(listener, config).unwrap();
        tokio::spawn(async move { server.serve(app.into_make_service()).await.unwrap() });
        ImageServer {
            addr,
            scheme: "https",
            shared,
        }
    }

    /// `http://127.0.0.1:PORT/path` (or `https://`)
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}://{}/{}",
            self.scheme,
            self.addr,
            path.trim_start_matches('/')
        )
    }

    pub fn put(&self, path: &str, served: Served) {
        self.shared.entries.lock().unwrap().insert(
            path.trim_start_matches('/').to_string(),
            Entry::File(served),
        );
    }

    /// Serves `data` at `path`; returns its URL.
    pub fn put_data(&self, path: &str, data: Vec<u8>) -> String {
        self.put(
            path,
            Served {
                data: data.into(),
                ..Default::default()
            },
        );
        self.url(path)
    }

    /// `path` answers 302 to `location`.
    pub fn redirect(&self, path: &str, location: &str) {
        self.shared.entries.lock().unwrap().insert(
            path.trim_start_matches('/').to_string(),
            Entry::Redirect(location.to_string()),
        );
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    pub fn bytes_sent(&self) -> u64 {
        self.shared.bytes_sent.load(Ordering::Relaxed)
    }
}

fn record(shared: &Shared, path: &str, query: Option<&str>, headers: &HeaderMap) -> usize {
    let text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    shared.seen.lock().unwrap().push(Seen {
        path: path.to_string(),
        query: query.map(str::to_string),
        authorization: text(header::AUTHORIZATION),
        range: text(header::RANGE),
    });
    let mut counts = shared.requests_for.lock().unwrap();
    let n = counts.entry(path.to_string()).or_default();
    *n += 1;
    *n
}

async fn serve(
    State(shared): State<Arc<Shared>>,
    UrlPath(path): UrlPath<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let nth = record(&shared, &path, uri.query(), &headers);
    let entry = shared.entries.lock().unwrap().get(&path).cloned();
    let served = match entry {
        None => return StatusCode::NOT_FOUND.into_response(),
        Some(Entry::Redirect(to)) => {
            return (StatusCode::FOUND, [(header::LOCATION, to)]).into_response();
        }
        Some(Entry::File(served)) => served,
    };
    if let Some((user, password)) = &served.auth {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"images\"")],
            )
                .into_response();
        }
    }
    let len = served.data.len();
    let start = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&s| s < len);
    let body = served.data.slice(start.unwrap_or(0)..);
    let break_after = if nth == 1 {
        served.break_first_after
    } else {
        None
    }
    .or(served.break_every_after);
    let stream_body = paced(shared.clone(), body.clone(), served.pace, break_after);
    let mut response = Response::builder()
        .header(header::CONTENT_LENGTH, body.len())
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, "\"v1\"");
    response = match start {
        Some(s) => response.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!("bytes {s}-{}/{len}", len - 1),
        ),
        None => response.status(StatusCode::OK),
    };
    response.body(stream_body).unwrap()
}

/// A body sent in chunks, with pauses between them, optionally broken off.
fn paced(
    shared: Arc<Shared>,
    data: Bytes,
    pace: Option<(usize, Duration)>,
    break_after: Option<usize>,
) -> Body {
    let (chunk, pause) = pace.unwrap_or((256 << 10, Duration::ZERO));
    let stream = futures::stream::unfold((data, 0usize), move |(mut rest, sent)| {
        let shared = shared.clone();
        async move {
            if rest.is_empty() {
                return None;
            }
            if let Some(limit) = break_after
                && sent >= limit
            {
                // Give the connection a turn to write what was sent before it breaks (hyper
                // drops unflushed data along with a broken connection).
                tokio::task::yield_now().await;
                let err = std::io::Error::other("connection broken on purpose");
                return Some((Err(err), (Bytes::new(), sent)));
            }
            let mut n = chunk.min(rest.len());
            if let Some(limit) = break_after {
                n = n.min(limit - sent);
            }
            if !pause.is_zero() && sent > 0 {
                tokio::time::sleep(pause).await;
            }
            let piece = rest.split_to(n);
            shared.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
            Some((Ok::<_, std::io::Error>(piece), (rest, sent + n)))
        }
    });
    Body::from_stream(stream)
}

/// `size` zero bytes, made as they are sent.
async fn zeros(State(shared): State<Arc<Shared>>, UrlPath(size): UrlPath<u64>) -> Response {
    static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
    let stream = futures::stream::unfold(size, move |left| {
        let shared = shared.clone();
        async move {
            if left == 0 {
                return None;
            }
            let n = left.min(ZEROS.len() as u64);
            shared.bytes_sent.fetch_add(n, Ordering::Relaxed);
            Some((
                Ok::<_, std::io::Error>(Bytes::from_static(&ZEROS[..n as usize])),
                left - n,
            ))
        }
    });
    Response::builder()
        .header(header::CONTENT_LENGTH, size)
        .body(Body::from_stream(stream))
        .unwrap()
}
