//! HTTP and HTTPS downloads.
//!
//! Redirects are followed here rather than by the client, so that every hop is checked like
//! the first URL (scheme, literal addresses; names are checked by the guarded resolver the
//! client connects through) and so that credentials are sent only to the origin they were
//! given for. A transfer that breaks off is resumed with `Range` from where it stopped, within
//! the fetch's retries ([`Retries`]).
//! HTTPS checks certificates against [`FetchTls`].

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use url::{Host, Url};

use super::budget::{FetchLimits, Retries};
use super::guard::{AddressGuard, GuardedResolver, find_refused};
use super::pipeline::Wire;
use super::tls::{FetchTls, certificate_refused};
use super::{FetchSource, describe_error, display_url};
use crate::fetch::error::{FetchError, FetchResult};

pub const MAX_REDIRECTS: usize = 5;
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A connection that sends nothing for this long is given up (and retried).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether trying again may help (shared with the FTP source).
pub(super) enum Failure {
    Transient(String),
    Fatal(FetchError),
}

impl From<FetchError> for Failure {
    fn from(e: FetchError) -> Self {
        Failure::Fatal(e)
    }
}

fn classify(err: reqwest::Error, url: &Url) -> Failure {
    // reqwest names the URL in its errors, query string and all: the message says where by
    // the job's (redacted) URL instead.
    let err = err.without_url();
    if let Some(refused) = find_refused(&err) {
        return Failure::Fatal(refused.into());
    }
    if let Some(untrusted) = certificate_refused(&err, url.host_str().unwrap_or_default()) {
        return Failure::Fatal(untrusted);
    }
    let message = describe_error(&err);
    if err.is_builder() || err.is_redirect() {
        Failure::Fatal(FetchError::FetchFailed(message))
    } else {
        Failure::Transient(message)
    }
}

fn client(guard: &AddressGuard, tls: &FetchTls) -> FetchResult<reqwest::Client> {
    reqwest::Client::builder()
        .tls_backend_preconfigured((*tls.client_config()).clone())
        .dns_resolver(GuardedResolver(guard.clone()))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(IDLE_TIMEOUT)
        .user_agent(concat!("extility-fetch/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(FetchError::internal)
}

/// Checks what the guarded resolver cannot see: the scheme of each hop, and a host given as
/// a literal address (the client connects to those without resolving).
fn check_hop(guard: &AddressGuard, url: &Url) -> FetchResult<()> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::FetchRefused(format!(
            "a redirect to the scheme '{}' is refused",
            url.scheme()
        )));
    }
    match url.host() {
        Some(Host::Ipv4(ip)) => guard.check(ip.into())?,
        Some(Host::Ipv6(ip)) => guard.check(ip.into())?,
        Some(Host::Domain(_)) => {}
        None => return Err(FetchError::FetchFailed("a redirect has no host".into())),
    }
    Ok(())
}

/// The state of one download across redirects and resumptions.
struct Download<'a> {
    client: reqwest::Client,
    guard: &'a AddressGuard,
    wire: &'a Wire,
    /// The origin the credentials belong to.
    origin: url::Origin,
    /// Dropped for good once a redirect leaves the origin.
    credentials: Option<(String, Option<String>)>,
    /// Where the data is: the first URL, then where redirects led.
    url: Url,
    /// Bytes of the file already forwarded.
    offset: u64,
    total: Option<u64>,
    /// ETag or Last-Modified of the first response, so a resumption gets the same file.
    validator: Option<String>,
}

pub async fn download(
    source: &FetchSource,
    guard: &AddressGuard,
    tls: &FetchTls,
    wire: &Wire,
    limits: &FetchLimits,
) -> FetchResult<()> {
    let credentials = source
        .user
        .clone()
        .map(|user| (user, source.password.clone()))
        .or_else(|| source.password.clone().map(|p| (String::new(), Some(p))));
    let mut dl = Download {
        client: client(guard, tls)?,
        guard,
        wire,
        origin: source.url.origin(),
        credentials,
        url: source.request_url(),
        offset: 0,
        total: None,
        validator: None,
    };
    let mut retries = Retries::new(limits);
    loop {
        let before = dl.offset;
        match dl.transfer().await {
            Ok(()) => return Ok(()),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Transient(message)) => {
                tracing::warn!(url = %display_url(&dl.url), offset = dl.offset, error = %message,
                    "fetch interrupted");
                let pause = retries.after_failure(dl.offset > before, message)?;
                tokio::time::sleep(pause).await;
            }
        }
    }
}

impl Download<'_> {
    /// Sends the request, following redirects, and returns the final response.
    async fn open(&mut self) -> Result<reqwest::Response, Failure> {
        self.wire.progress.set_phase("connecting");
        for hop in 0..=MAX_REDIRECTS {
            check_hop(self.guard, &self.url)?;
            let mut request = self.client.get(self.url.clone());
            if self.offset > 0 {
                request = request.header(header::RANGE, format!("bytes={}-", self.offset));
                if let Some(validator) = &self.validator {
                    request = request.header(header::IF_RANGE, validator);
                }
            }
            if let Some((user, password)) = &self.credentials {
                request = request.basic_auth(user, password.as_ref());
            }
            let response = request.send().await.map_err(|e| classify(e, &self.url))?;
            if !response.status().is_redirection() {
                return Ok(response);
            }
            if hop == MAX_REDIRECTS {
                break;
            }
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| {
                    FetchError::FetchFailed(format!(
                        "HTTP {} without a Location header",
                        response.status()
                    ))
                })?;
            let next = self.url.join(location).map_err(|e| {
                FetchError::FetchFailed(format!("a redirect to an invalid URL: {e}"))
            })?;
            if next.origin() != self.origin && self.credentials.take().is_some() {
                tracing::info!(to = %next.origin().ascii_serialization(),
                    "redirected to another origin; credentials are not sent there");
            }
            self.url = next;
        }
        Err(Failure::Fatal(FetchError::FetchFailed(format!(
            "more than {MAX_REDIRECTS} redirects"
        ))))
    }

    /// One request: forwards the body from `offset` on.
    async fn transfer(&mut self) -> Result<(), Failure> {
        let mut response = self.open().await?;
        let status = response.status();
        // Bytes at the start of this body that were already forwarded.
        let mut skip = 0u64;
        match status {
            StatusCode::OK => {
                skip = self.offset;
                if self.offset == 0 {
                    self.validator = validator(response.headers());
                }
                self.total = response.content_length();
            }
            StatusCode::PARTIAL_CONTENT if self.offset > 0 => {
                let (start, total) = content_range(response.headers()).ok_or_else(|| {
                    Failure::Transient("a resumed transfer had no valid Content-Range".into())
                })?;
                if start != self.offset {
                    return Err(Failure::Transient(format!(
                        "asked to resume at {} but the server sent from {start}",
                        self.offset
                    )));
                }
                self.total = total.or(self.total);
            }
            s if s.is_server_error()
                || s == StatusCode::REQUEST_TIMEOUT
                || s == StatusCode::TOO_MANY_REQUESTS =>
            {
                return Err(Failure::Transient(format!("the server answered HTTP {s}")));
            }
            s => {
                let hint = match s {
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                        " (check conn_user and conn_pass)"
                    }
                    _ => "",
                };
                return Err(Failure::Fatal(FetchError::FetchFailed(format!(
                    "the server answered HTTP {s} for {}{hint}",
                    display_url(&self.url)
                ))));
            }
        }
        let progress = &self.wire.progress;
        progress.set_total(self.total);
        progress.set_phase("downloading");
        while let Some(mut chunk) = response.chunk().await.map_err(|e| classify(e, &self.url))? {
            self.wire.received(chunk.len());
            if skip > 0 {
                let n = skip.min(chunk.len() as u64);
                skip -= n;
                let _ = chunk.split_to(n as usize);
                if chunk.is_empty() {
                    continue;
                }
            }
            self.offset += chunk.len() as u64;
            progress.set_done(self.offset);
            if self.wire.send(chunk).await.is_err() {
                // The pipeline stopped; its error says why.
                return Err(Failure::Fatal(FetchError::Cancelled));
            }
        }
        match self.total {
            Some(total) if self.offset < total => Err(Failure::Transient(format!(
                "the connection closed after {} of {total} bytes",
                self.offset
            ))),
            _ => Ok(()),
        }
    }
}

/// A strong ETag, else Last-Modified.
fn validator(headers: &HeaderMap) -> Option<String> {
    let etag = headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.starts_with("W/"));
    etag.or_else(|| {
        headers
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
    })
    .map(str::to_string)
}

/// `Content-Range: bytes START-END/TOTAL` → (START, TOTAL).
fn content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let range = value.trim().strip_prefix("bytes ")?;
    let (span, total) = range.split_once('/')?;
    let start = span.split_once('-')?.0.trim().parse().ok()?;
    Some((start, total.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_are_parsed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_RANGE, "bytes 100-199/1000".parse().unwrap());
        assert_eq!(content_range(&h), Some((100, Some(1000))));
        h.insert(header::CONTENT_RANGE, "bytes 5-9/*".parse().unwrap());
        assert_eq!(content_range(&h), Some((5, None)));
        h.insert(header::CONTENT_RANGE, "items 5-9/10".parse().unwrap());
        assert_eq!(content_range(&h), None);
    }

    #[test]
    fn redirects_to_other_schemes_and_internal_literals_are_refused() {
        let guard = AddressGuard::default();
        for url in [
            "file:///etc/passwd",
            "ftp://example.com/x",
            "http://10.0.0.1/x",
            "http://[::1]/x",
            "http://169.254.169.254/latest/meta-data",
        ] {
            let err = check_hop(&guard, &Url::parse(url).unwrap()).unwrap_err();
            assert_eq!(err.code(), "FETCH_REFUSED", "{url}");
        }
        assert!(check_hop(&guard, &Url::parse("https://example.com/a").unwrap()).is_ok());
    }
}
