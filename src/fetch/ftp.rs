//! FTP and FTPS downloads (suppaftp, blocking, on a thread of their own).
//!
//! `ftps://` is explicit FTPS (`AUTH TLS` on the control connection, default port 21, data
//! protected with `PROT P`), certificates checked like HTTPS ([`FetchTls`]). Passive data
//! connections go to the control connection's (checked) address whatever the server's `PASV`
//! reply names, so a server cannot point the fetch at an internal address. A transfer that
//! breaks off is resumed with `REST`, within the fetch's retries ([`Retries`]).

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use bytes::BytesMut;
use rustls::ClientConfig;
use suppaftp::types::FileType;
use suppaftp::{FtpError, RustlsConnector, RustlsFtpStream, Status};
use tokio::runtime::Handle;

use super::FetchSource;
use super::budget::{FetchLimits, Retries};
use super::guard::{AddressGuard, Refused};
use super::http::{CONNECT_TIMEOUT, Failure, IDLE_TIMEOUT};
use super::pipeline::Wire;
use super::tls::{FetchTls, certificate_refused};
use crate::fetch::error::{FetchError, FetchResult};

const READ_CHUNK: usize = 256 << 10;

fn ftp_failure(what: &str, host: &str, err: FtpError) -> Failure {
    match err {
        FtpError::ConnectionError(e) => {
            if let Some(r) = e.get_ref().and_then(|i| i.downcast_ref::<Refused>()) {
                return Failure::Fatal(r.clone().into());
            }
            // The TLS handshake happens on the first command after AUTH TLS.
            if let Some(untrusted) = certificate_refused(&e, host) {
                return Failure::Fatal(untrusted);
            }
            Failure::Transient(format!("{what}: {e}"))
        }
        FtpError::UnexpectedResponse(response) => {
            let text = String::from_utf8_lossy(&response.body).trim().to_string();
            let message = format!("{what}: the FTP server answered {text}");
            // 4xx replies are transient by definition; 5xx are permanent.
            if matches!(response.status.code(), 400..=499) {
                Failure::Transient(message)
            } else {
                Failure::Fatal(FetchError::FetchFailed(message))
            }
        }
        other => Failure::Fatal(FetchError::FetchFailed(format!("{what}: {other}"))),
    }
}

fn connect(guard: &AddressGuard, addr: SocketAddr) -> std::io::Result<TcpStream> {
    guard.check(addr.ip()).map_err(std::io::Error::other)?;
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    Ok(stream)
}

/// The file's path on the server: relative to the login directory (RFC 1738), with `%2F`
/// at the start for an absolute path.
fn remote_path(source: &FetchSource) -> FetchResult<String> {
    let raw = source
        .url
        .path()
        .strip_prefix('/')
        .unwrap_or(source.url.path());
    let path = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| FetchError::invalid("url", "has a path that is not UTF-8"))?
        .into_owned();
    if path.is_empty() || path.ends_with('/') {
        return Err(FetchError::invalid("url", "names a directory, not a file"));
    }
    if path.contains(['\r', '\n']) {
        return Err(FetchError::invalid("url", "has a line break in its path"));
    }
    Ok(path)
}

/// Downloads `source` into the pipeline. Blocking: run it on a blocking thread. It gives up
/// at its next read once the wire is stopped (cancelled, or a budget ran out).
pub fn download(
    source: &FetchSource,
    guard: &AddressGuard,
    tls: &FetchTls,
    wire: &Wire,
    limits: &FetchLimits,
    runtime: Handle,
) -> FetchResult<()> {
    let host = source
        .url
        .host_str()
        .ok_or_else(|| FetchError::invalid("url", "has no host"))?
        .to_string();
    let port = source.url.port().unwrap_or(21);
    let path = remote_path(source)?;
    wire.progress.set_phase("connecting");
    let addrs = runtime.block_on(guard.resolve(&host, port))?;
    let secure = source.url.scheme() == "ftps";
    let tls = secure.then(|| tls.client_config());
    let mut offset = 0u64;
    let mut retries = Retries::new(limits);
    loop {
        let before = offset;
        let attempt = Attempt {
            source,
            guard,
            wire,
            host: &host,
            addrs: &addrs,
            path: &path,
            tls: tls.clone(),
        };
        match attempt.run(&mut offset) {
            Ok(()) => return Ok(()),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Transient(message)) => {
                tracing::warn!(url = %source.redacted(), offset, error = %message,
                    "FTP fetch interrupted");
                let pause = retries.after_failure(offset > before, message)?;
                let stop = wire.stop_token();
                runtime.block_on(async {
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.cancelled() => {}
                    }
                });
                if stop.is_cancelled() {
                    return Err(FetchError::Cancelled);
                }
            }
        }
    }
}

struct Attempt<'a> {
    source: &'a FetchSource,
    guard: &'a AddressGuard,
    wire: &'a Wire,
    host: &'a str,
    addrs: &'a [SocketAddr],
    path: &'a str,
    tls: Option<Arc<ClientConfig>>,
}

impl Attempt<'_> {
    fn run(&self, offset: &mut u64) -> Result<(), Failure> {
        let progress = &self.wire.progress;
        progress.set_phase("connecting");
        let mut last_error = None;
        let control = self
            .addrs
            .iter()
            .find_map(|&addr| match connect(self.guard, addr) {
                Ok(stream) => Some(stream),
                Err(e) => {
                    last_error = Some(e);
                    None
                }
            });
        let control = control.ok_or_else(|| {
            Failure::Transient(format!(
                "cannot connect to {}: {}",
                self.host,
                last_error.map(|e| e.to_string()).unwrap_or_default()
            ))
        })?;
        let guard = self.guard.clone();
        let mut ftp = RustlsFtpStream::connect_with_stream(control)
            .map_err(|e| ftp_failure("connecting", self.host, e))?
            .passive_stream_builder(move |addr| {
                connect(&guard, addr).map_err(FtpError::ConnectionError)
            });
        if let Some(tls) = &self.tls {
            ftp = ftp
                .into_secure(RustlsConnector::from(tls.clone()), self.host)
                .map_err(|e| ftp_failure("starting TLS", self.host, e))?;
        }
        ftp.set_passive_nat_workaround(true);
        let user = self.source.user.as_deref().unwrap_or("anonymous");
        let password = self.source.password.as_deref().unwrap_or("anonymous@");
        ftp.login(user, password).map_err(|e| match e {
            FtpError::UnexpectedResponse(r) if r.status == Status::NotLoggedIn => {
                Failure::Fatal(FetchError::FetchFailed(
                    "the FTP server refused the login (check conn_user and conn_pass)".into(),
                ))
            }
            e => ftp_failure("logging in", self.host, e),
        })?;
        ftp.transfer_type(FileType::Binary)
            .map_err(|e| ftp_failure("setting binary mode", self.host, e))?;
        if *offset == 0
            && let Ok(size) = ftp.size(self.path)
        {
            progress.set_total(Some(size as u64));
        }
        if *offset > 0 {
            ftp.resume_transfer(*offset as usize)
                .map_err(|e| ftp_failure("resuming", self.host, e))?;
        }
        let mut stream = ftp.retr_as_stream(self.path).map_err(|e| match e {
            FtpError::UnexpectedResponse(r) if r.status == Status::FileUnavailable => {
                Failure::Fatal(FetchError::FetchFailed(format!(
                    "the FTP server has no file {}",
                    self.path
                )))
            }
            e => ftp_failure("starting the transfer", self.host, e),
        })?;
        progress.set_phase("downloading");
        loop {
            if self.wire.is_stopped() {
                return Err(Failure::Fatal(FetchError::Cancelled));
            }
            let mut buf = BytesMut::zeroed(READ_CHUNK);
            let n = match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(certificate_refused(&e, self.host)
                        .map(Failure::Fatal)
                        .unwrap_or_else(|| Failure::Transient(format!("reading from FTP: {e}"))));
                }
            };
            buf.truncate(n);
            self.wire.received(n);
            *offset += n as u64;
            progress.set_done(*offset);
            if self.wire.blocking_send(buf.freeze()).is_err() {
                return Err(Failure::Fatal(FetchError::Cancelled));
            }
        }
        stream
            .finish()
            .map_err(|e| ftp_failure("finishing the transfer", self.host, e))?;
        let _ = ftp.quit();
        Ok(())
    }
}
