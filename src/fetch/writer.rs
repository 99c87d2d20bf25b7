//! The image writer: fetches an image from a source into a destination file, thinly, and
//! returns what it wrote. What the file becomes (a disk, an image) is the caller's business
//! (FetchDisk's job kind, `crate::ops::fetch`).
//!
//! The writer checks the checksum before it reports success; on failure the destination holds
//! garbage that the caller discards. Whatever happened, it reports the bytes received over the
//! wire, which the customer is billed for.

use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;

use super::budget::{Budget, FetchLimits};
use super::guard::AddressGuard;
use super::pipeline::{self, Written};
use super::{Checksum, FetchSource, FetchTls, ftp, http};
use crate::error::{ApiError, ApiResult};
use crate::progress::Progress;

/// Where fetches may connect, which certificates they trust, what decompressing may cost and
/// how long, how slow and how flaky a fetch may be.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    /// Ranges opened with `--allow-fetch-from`, although internal.
    pub allow: Vec<IpNet>,
    pub tls: FetchTls,
    /// Bytes of memory the xz or zstd decoder may use (`--max-decompression-memory`); data
    /// that needs more fails with `DECOMPRESSION_LIMIT`.
    pub max_decompression_memory: u64,
    /// The fetch's budgets (`--fetch-*`); one that runs out fails with `FETCH_TIMEOUT`.
    pub limits: FetchLimits,
}

/// What a fetch did.
#[derive(Debug)]
pub struct Fetched {
    /// What was written, verified against the checksum, or why the fetch failed.
    pub result: ApiResult<Written>,
    /// Bytes received over the wire (compressed), also when the fetch failed.
    pub wire_bytes: u64,
}

/// Fetches `source` into the file `dest` (created or truncated), an image of at most
/// `max_size` bytes once decompressed, checking it against `checksum`, within the policy's
/// budgets (whose clock starts now). `progress` hears how far the download is and stops it
/// when cancelled.
pub async fn fetch_image(
    source: &FetchSource,
    checksum: &Checksum,
    max_size: u64,
    dest: &Path,
    policy: &FetchPolicy,
    progress: Arc<Progress>,
) -> Fetched {
    let (written, wire_bytes) =
        download_into(source, checksum, max_size, dest, policy, progress).await;
    let result = written.and_then(|written| verify(checksum, written));
    if let Ok(written) = &result {
        tracing::info!(
            url = %source.redacted(),
            compression = written.compression.name(),
            image_bytes = written.image_bytes,
            bytes_received = wire_bytes,
            bytes_written = written.stats.bytes_written,
            iso = written.is_iso,
            "image fetched"
        );
    }
    Fetched { result, wire_bytes }
}

/// Downloads, decompresses, hashes and thin-writes into `dest`. Returns what was written and
/// the bytes received over the wire (also when it failed).
async fn download_into(
    source: &FetchSource,
    checksum: &Checksum,
    max_size: u64,
    dest: &Path,
    policy: &FetchPolicy,
    progress: Arc<Progress>,
) -> (ApiResult<Written>, u64) {
    let budget = Budget::start(policy.limits);
    progress.set_phase("connecting");
    let opened = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dest)
        .await;
    let file = match opened {
        Ok(file) => file.into_std().await,
        Err(e) => {
            return (
                Err(ApiError::Storage(format!("creating the staging file: {e}"))),
                0,
            );
        }
    };
    let started = pipeline::start(
        file,
        max_size,
        policy.max_decompression_memory,
        policy.limits.max_padding,
        checksum,
        progress.clone(),
    );
    let (wire, stages) = match started {
        Ok(started) => started,
        Err(e) => return (Err(ApiError::internal(e)), 0),
    };
    let guard = AddressGuard::new(policy.allow.clone());
    let tls = &policy.tls;
    let cancel = progress.cancel_token().clone();
    let limits = policy.limits;
    // The deadline and the throughput are watched beside the download, which is dropped (or,
    // on its FTP thread, stopped at its next read) when one runs out.
    let downloaded = match source.url.scheme() {
        "http" | "https" => {
            tokio::select! {
                r = http::download(source, &guard, tls, &wire, &limits) => r,
                _ = cancel.cancelled() => Err(ApiError::Cancelled),
                spent = budget.watch(&wire) => Err(ApiError::FetchTimeout(spent)),
            }
        }
        _ => {
            let (source, ftp_wire, tls) = (source.clone(), wire.clone(), tls.clone());
            let runtime = tokio::runtime::Handle::current();
            let task = tokio::task::spawn_blocking(move || {
                ftp::download(&source, &guard, &tls, &ftp_wire, &limits, runtime)
            });
            tokio::select! {
                r = task => r.map_err(ApiError::from).and_then(|r| r),
                _ = cancel.cancelled() => Err(ApiError::Cancelled),
                spent = budget.watch(&wire) => Err(ApiError::FetchTimeout(spent)),
            }
        }
    };
    if let Err(ApiError::FetchTimeout(spent)) = &downloaded {
        tracing::info!(url = %source.redacted(), budget = %spent, "fetch stopped");
        // The stages stop without waiting for the rest (an FTP thread may still hold the wire).
        wire.stop();
    }
    let wire_bytes = wire.total_received();
    // Closing our end of the wire tells the decoder the data is complete.
    drop(wire);
    if downloaded.is_ok() {
        progress.set_phase("verifying");
    }
    let written = tokio::task::spawn_blocking(move || stages.wait())
        .await
        .map_err(ApiError::from)
        .and_then(|r| r);
    let result = if progress.is_cancelled() {
        Err(ApiError::Cancelled)
    } else {
        match (downloaded, written) {
            // A downloader stopped by the pipeline reports Cancelled; the pipeline knows why.
            (Err(e), _) if !matches!(e, ApiError::Cancelled) => Err(e),
            (_, Err(e)) | (Err(e), Ok(_)) => Err(e),
            (Ok(()), Ok(w)) if w.image_bytes == 0 => Err(ApiError::FetchFailed(format!(
                "{} is empty",
                source.redacted()
            ))),
            (Ok(()), Ok(w)) => Ok(w),
        }
    };
    (result, wire_bytes)
}

fn verify(checksum: &Checksum, written: Written) -> ApiResult<Written> {
    let (kind, expected) = match checksum {
        Checksum::None => return Ok(written),
        Checksum::Md5(hex) => ("md5", hex),
        Checksum::Sha256(hex) => ("sha256", hex),
    };
    let actual = written.digest.as_deref().unwrap_or_default();
    if actual == expected {
        Ok(written)
    } else {
        Err(ApiError::ChecksumMismatch {
            expected: format!("{kind} {expected}"),
            actual: format!("{kind} {actual}"),
        })
    }
}
