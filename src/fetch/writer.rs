//! The image writer: fetches an image from a source into a destination file, thinly, and
//! returns what it wrote. What the file becomes (a disk, an image) is the caller's business
//! (FetchDisk's job kind, `crate::ops::jobs::fetch`).
//!
//! The writer checks the checksum before it reports success; on failure the destination holds
//! garbage that the caller discards. Whatever happened, it reports the bytes received over the
//! wire, which the customer is billed for.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;

use super::budget::{Budget, FetchLimits};
use super::guard::AddressGuard;
use super::inspect::{self, Inspected};
use super::pipeline::{self, MakeVolume, Streamed, Target, Volume, Written};
use super::{Checksum, FetchSource, FetchTls, ftp, http};
use crate::fetch::error::{FetchError, FetchResult};
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
    /// Bytes the staging file system keeps free (`--min-free-space`): a conversion that could
    /// take it below fails with `INSUFFICIENT_STORAGE` before it starts, and a download that
    /// would stops there with the same code.
    pub min_free_space: u64,
}

/// What a fetch did.
#[derive(Debug)]
pub struct Fetched {
    /// What was written, verified against the checksum, or why the fetch failed.
    pub result: FetchResult<Written>,
    /// Bytes received over the wire (compressed), also when the fetch failed.
    pub wire_bytes: u64,
}

/// Fetches `source` into the file `dest` (created or truncated), an image of at most
/// `max_size` bytes once decompressed, checking it against `checksum`, within the policy's
/// budgets (whose clock starts now). `progress` hears how far the download is and stops it
/// when cancelled.
///
/// The image's format is recognised by its bytes and the image inspected
/// ([`super::inspect`]); one that is not safe fails with `UNSAFE_IMAGE`. A raw or ISO image is
/// `dest` as fetched; a fixed VHD loses its footer; a qcow2, VMDK, dynamic VHD or VHDX image
/// is fetched into [`scratch_path`]`(dest)` and converted from there into `dest` (phase
/// `converting`), and the scratch file removed. Either way `dest` ends up holding the raw disk,
/// and [`Written::format`] says what was fetched.
///
/// With `volume`, a raw or ISO image (gzip'd, xz'd or not) is streamed into the volume it
/// makes instead, and never touches `dest` ([`Written::streamed`] holds the volume, open, the
/// image inspected in it); container formats still go through `dest`, since converting them
/// needs random access to the fetched file.
pub async fn fetch_image(
    source: &FetchSource,
    checksum: &Checksum,
    max_size: u64,
    dest: &Path,
    volume: Option<MakeVolume>,
    policy: &FetchPolicy,
    progress: Arc<Progress>,
) -> Fetched {
    let (written, wire_bytes) = download_into(
        source,
        checksum,
        max_size,
        dest,
        volume,
        policy,
        progress.clone(),
    )
    .await;
    let result = match written.and_then(|written| verify(checksum, written)) {
        Ok(written) => prepare(written, max_size, dest, policy, &progress).await,
        Err(e) => Err(e),
    };
    if let Ok(written) = &result {
        tracing::info!(
            url = %source.redacted(),
            compression = written.compression.name(),
            image_bytes = written.image_bytes,
            bytes_received = wire_bytes,
            bytes_written = written.stats.bytes_written,
            format = written.format.name(),
            "image fetched"
        );
    }
    Fetched { result, wire_bytes }
}

/// Downloads, decompresses, hashes and thin-writes into `dest` (made now), or with `volume`
/// into the volume it makes (or `dest`, made with the first bytes, for a container format).
/// Returns what was written and the bytes received over the wire (also when it failed).
async fn download_into(
    source: &FetchSource,
    checksum: &Checksum,
    max_size: u64,
    dest: &Path,
    volume: Option<MakeVolume>,
    policy: &FetchPolicy,
    progress: Arc<Progress>,
) -> (FetchResult<Written>, u64) {
    let budget = Budget::start(policy.limits);
    progress.set_phase("connecting");
    let target = match volume {
        Some(make) => Target::Volume {
            make,
            file: dest.to_path_buf(),
        },
        None => {
            let opened = tokio::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(dest)
                .await;
            match opened {
                Ok(file) => Target::File(file.into_std().await),
                Err(e) => {
                    return (
                        Err(FetchError::Storage(format!(
                            "creating the staging file: {e}"
                        ))),
                        0,
                    );
                }
            }
        }
    };
    let started = pipeline::start(
        target,
        max_size,
        policy.max_decompression_memory,
        policy.limits.max_padding,
        policy.min_free_space,
        checksum,
        progress.clone(),
    );
    let (wire, stages) = match started {
        Ok(started) => started,
        Err(e) => return (Err(FetchError::internal(e)), 0),
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
                _ = cancel.cancelled() => Err(FetchError::Cancelled),
                spent = budget.watch(&wire) => Err(FetchError::from(spent)),
            }
        }
        _ => {
            let (source, ftp_wire, tls) = (source.clone(), wire.clone(), tls.clone());
            let runtime = tokio::runtime::Handle::current();
            let task = tokio::task::spawn_blocking(move || {
                ftp::download(&source, &guard, &tls, &ftp_wire, &limits, runtime)
            });
            tokio::select! {
                r = task => r.map_err(FetchError::from).and_then(|r| r),
                _ = cancel.cancelled() => Err(FetchError::Cancelled),
                spent = budget.watch(&wire) => Err(FetchError::from(spent)),
            }
        }
    };
    if let Err(FetchError::FetchTimeout(spent)) = &downloaded {
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
        .map_err(FetchError::from)
        .and_then(|r| r);
    let result = if progress.is_cancelled() {
        Err(FetchError::Cancelled)
    } else {
        match (downloaded, written) {
            // A downloader stopped by the pipeline reports Cancelled; the pipeline knows why.
            (Err(e), _) if !matches!(e, FetchError::Cancelled) => Err(e),
            (_, Err(e)) | (Err(e), Ok(_)) => Err(e),
            (Ok(()), Ok(w)) if w.image_bytes == 0 => Err(FetchError::FetchFailed(format!(
                "{} is empty",
                source.redacted()
            ))),
            (Ok(()), Ok(w)) => Ok(w),
        }
    };
    (result, wire_bytes)
}

/// Where a container image is fetched to before it is converted into `dest`: beside it, with
/// the same staging name before its first dot (`<name>.fetched.part`), so that whatever
/// removes an attempt's staged data removes it too.
pub fn scratch_path(dest: &Path) -> PathBuf {
    dest.with_extension("fetched.part")
}

/// Inspects the fetched file `dest` and makes it the raw disk: refuses an unsafe image, cuts
/// a fixed VHD's footer off, converts a container format.
async fn prepare(
    mut written: Written,
    max_size: u64,
    dest: &Path,
    policy: &FetchPolicy,
    progress: &Arc<Progress>,
) -> FetchResult<Written> {
    progress.set_phase("inspecting");
    if let Some(Streamed(volume)) = written.streamed.take() {
        let volume = prepare_streamed(volume, &mut written, max_size).await?;
        written.streamed = Some(Streamed(volume));
        return Ok(written);
    }
    let (file, len) = (dest.to_path_buf(), written.image_bytes);
    let inspected = tokio::task::spawn_blocking(move || {
        // The thin writer leaves trailing zeros unwritten: the file gets its whole length
        // back, as readers of its format expect.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file)?;
        file.set_len(len)?;
        inspect::inspect(&file, len, max_size)
    })
    .await?
    .map_err(|e| FetchError::Storage(format!("reading the staged image: {e}")))?
    .map_err(|e| FetchError::UnsafeImage(e.0))?;
    written.format = inspected.format;
    if !inspected.format.is_container() {
        if written.image_bytes > max_size {
            return Err(FetchError::ImageTooLarge {
                disk_size: max_size,
            });
        }
        return Ok(written);
    }
    if inspected.fixed_vhd {
        // The data as it is, without its footer.
        let (path, size) = (dest.to_path_buf(), inspected.virtual_size);
        tokio::task::spawn_blocking(move || cut_footer(&path, size))
            .await?
            .map_err(|e| FetchError::Storage(format!("cutting the VHD footer off: {e}")))?;
        return Ok(written);
    }
    if progress.is_cancelled() {
        return Err(FetchError::Cancelled);
    }
    let scratch = scratch_path(dest);
    tokio::fs::rename(dest, &scratch)
        .await
        .map_err(|e| FetchError::Storage(format!("moving the fetched image aside: {e}")))?;
    let converted = convert(&inspected, &scratch, dest, policy, progress).await;
    if let Err(e) = tokio::fs::remove_file(&scratch).await {
        tracing::warn!(file = %scratch.display(), error = %e, "could not remove a fetched image");
    }
    converted.map(|()| written)
}

/// Reads a streamed volume for the inspector.
struct VolumeBytes<'a>(&'a dyn Volume);

impl inspect::Bytes for VolumeBytes<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.0.read_at(buf, offset)
    }
}

/// Inspects an image streamed into a volume (only raw images and ISOs are): refuses an unsafe
/// image, zeros a fixed VHD's footer (the volume is cut to the disk's size when it becomes
/// one). Returns the volume, still open.
async fn prepare_streamed(
    volume: Box<dyn Volume>,
    written: &mut Written,
    max_size: u64,
) -> FetchResult<Box<dyn Volume>> {
    let len = written.image_bytes;
    let (mut volume, inspected) = tokio::task::spawn_blocking(move || {
        let inspected = inspect::inspect(&VolumeBytes(&*volume), len, max_size);
        (volume, inspected)
    })
    .await?;
    let inspected = inspected
        .map_err(|e| FetchError::Storage(format!("reading the staged image: {e}")))?
        .map_err(|e| FetchError::UnsafeImage(e.0))?;
    written.format = inspected.format;
    if inspected.fixed_vhd {
        let size = inspected.virtual_size;
        return tokio::task::spawn_blocking(move || {
            volume.zero(size, len.saturating_sub(size)).map(|()| volume)
        })
        .await?
        .map_err(|e| FetchError::Storage(format!("cutting the VHD footer off: {e}")));
    }
    if inspected.format.is_container() {
        // The first bytes said raw, so the whole image cannot be a container but a fixed VHD.
        return Err(FetchError::internal(anyhow::anyhow!(
            "a {} image was streamed as raw",
            inspected.format.name()
        )));
    }
    if written.image_bytes > max_size {
        return Err(FetchError::ImageTooLarge {
            disk_size: max_size,
        });
    }
    Ok(volume)
}

/// Cuts a fixed VHD's file to its data's `size`, leaving the partial block that held the
/// footer a hole when what remains of it is zeros (the file stays thin).
fn cut_footer(path: &Path, size: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    file.set_len(size)?;
    let block_start = size & !4095;
    if block_start < size {
        let mut rest = vec![0u8; (size - block_start) as usize];
        file.read_exact_at(&mut rest, block_start)?;
        if crate::sparse::is_zero(&rest) {
            crate::sparse::punch_hole(&file, block_start, 4096)?;
        }
    }
    Ok(())
}

/// Converts the inspected image `scratch` into `dest`, once the node has room for its data.
async fn convert(
    inspected: &Inspected,
    scratch: &Path,
    dest: &Path,
    policy: &FetchPolicy,
    progress: &Arc<Progress>,
) -> FetchResult<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let stats = rustix::fs::statvfs(dir)
        .map_err(|e| FetchError::Storage(format!("checking free space: {e}")))?;
    let free = stats.f_bavail.saturating_mul(stats.f_frsize);
    let needed = inspected.data_bound;
    if free < needed.saturating_add(policy.min_free_space) {
        return Err(FetchError::ConversionSpace {
            free,
            needed,
            reserve: policy.min_free_space,
        });
    }
    // The download's figures come back once the conversion, which reports its share of the
    // virtual size, is done: a finished job shows what was fetched.
    let fetched = progress.snapshot();
    progress.set_phase("converting");
    progress.set_total(Some(inspected.virtual_size));
    progress.set_done(0);
    let (format, size) = (inspected.format, inspected.virtual_size);
    let (src, out, job) = (scratch.to_path_buf(), dest.to_path_buf(), progress.clone());
    let converted = tokio::task::spawn_blocking(move || {
        super::convert::convert(format, &src, &out, size, &job)
    })
    .await
    .map_err(FetchError::from)
    .and_then(|r| r);
    progress.set_total(fetched.bytes_total);
    progress.set_done(fetched.bytes_done);
    tracing::info!(
        format = format.name(),
        virtual_size = size,
        ok = converted.is_ok(),
        "image converted"
    );
    converted
}

fn verify(checksum: &Checksum, written: Written) -> FetchResult<Written> {
    let Checksum::Digest(algorithm, expected) = checksum else {
        return Ok(written);
    };
    let actual = written.digest.as_deref().unwrap_or_default();
    if actual == expected {
        Ok(written)
    } else {
        let kind = algorithm.name();
        Err(FetchError::ChecksumMismatch {
            expected: format!("{kind} {expected}"),
            actual: format!("{kind} {actual}"),
        })
    }
}
