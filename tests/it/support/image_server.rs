//! What the fetch tests serve images from: an HTTP or HTTPS server inside the test process
//! (files, Basic auth, redirects, Range, paced and broken transfers, endless zeros) and a real
//! FTP or FTPS server (pyftpdlib) on a free port, plus throwaway certificates, image
//! generators and database look-ups.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
use sqlx::Connection;

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

    pub fn put_data(&self, path: &str, data: Vec<u8>) {
        self.put(
            path,
            Served {
                data: data.into(),
                ..Default::default()
            },
        );
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

fn record(shared: &Shared, path: &str, headers: &HeaderMap) -> usize {
    let text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    shared.seen.lock().unwrap().push(Seen {
        path: path.to_string(),
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
    headers: HeaderMap,
) -> Response {
    let nth = record(&shared, &path, &headers);
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
    };
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

/// A deterministic image: `len` bytes where every `every`th 4 KiB block holds pseudo-random
/// data and the rest are zeros. Returns the image and its count of non-zero blocks.
pub fn sparse_image(len: usize, every: usize, seed: u64) -> (Vec<u8>, usize) {
    let mut image = vec![0u8; len];
    let mut state = seed | 1;
    let mut blocks = 0;
    for (i, block) in image.chunks_mut(4096).enumerate() {
        if i % every == 0 {
            blocks += 1;
            for b in block.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = (state >> 24) as u8 | 1;
            }
        }
    }
    (image, blocks)
}

pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

/// gzip in two members, as `cat a.gz b.gz` makes, to check every member is read.
pub fn gzip_two_members(data: &[u8]) -> Vec<u8> {
    let half = data.len() / 2;
    let mut out = Vec::new();
    for part in [&data[..half], &data[half..]] {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(part).unwrap();
        out.extend(enc.finish().unwrap());
    }
    out
}

/// A small ISO 9660 image made with `xorriso -as mkisofs` from a folder holding one file.
pub fn make_iso(dir: &Path) -> Vec<u8> {
    let content = dir.join("iso-content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("README.TXT"), b"an installer, say\n").unwrap();
    let iso = dir.join("test.iso");
    let out = std::process::Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "TESTCD", "-o"])
        .arg(&iso)
        .arg(&content)
        .output()
        .expect("running xorriso (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "xorriso failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&iso).unwrap()
}

/// Runs one query returning a single i64 (or NULL) against the test's database.
pub async fn db_i64(db_url: &str, sql: &'static str, id: i64) -> Option<i64> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(db_url).await.unwrap();
    let value: Option<i64> = sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    value
}

/// The file of a disk's volume under `<data-dir>/volumes/`.
pub async fn disk_volume_path(db_url: &str, data_dir: &Path, disk_id: i64) -> PathBuf {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(db_url).await.unwrap();
    let file: String = sqlx::query_scalar(
        "SELECT v.file FROM disks d JOIN volumes v ON v.id = d.volume_id WHERE d.id = $1",
    )
    .bind(disk_id)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    data_dir.join("volumes").join(file)
}

/// Files in a folder of the data directory.
pub fn files_in(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}
