//! The FetchDisk job: fetch into a staging file, verify, and only then turn it into a disk or
//! an image, in one transaction with the usage record.
//!
//! Nothing half-made is visible: the data lives in `<data>/staging/<job uuid>.part` until the
//! job succeeds, and is removed when it fails or is cancelled. A job interrupted by a crash
//! is claimed again after the restart; it then fetches from the start (an uncompressed
//! prefix cannot be trusted without re-reading it, and a decompressor's state is lost), or,
//! if the earlier attempt had already committed its result, just reports it. The worker gives
//! up with a reason after repeated interruptions. The startup sweep removes staging files
//! of jobs that are not running.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sqlx::AnyConnection;

use super::guard::AddressGuard;
use super::pipeline::{self, Written};
use super::{Checksum, FetchSource, ftp, http, secrets};
use crate::db::now_ms;
use crate::error::{ApiError, ApiResult};
use crate::jobs::{JobOutcome, RunningJob};
use crate::ops::disk::{self, NewDisk};
use crate::ops::image::{self, NewImage};
use crate::ops::vdc;
use crate::storage::volumes;

/// The job's parameters, as FetchDisk queued them (`crate::ops::fetch`).
#[derive(Debug, Deserialize)]
struct FetchParams {
    url: String,
    checksum: Option<String>,
    name: String,
    disk_productoffer_id: i64,
    disk_size: i64,
    vdc_id: i64,
    make_image: bool,
    image_default_username: Option<String>,
}

impl FetchParams {
    fn item_type(&self) -> &'static str {
        if self.make_image { "image" } else { "disk" }
    }
}

/// Runs a FetchDisk job.
pub async fn run(job: &RunningJob) -> ApiResult<JobOutcome> {
    let params: FetchParams =
        serde_json::from_value(job.row.params()?).map_err(ApiError::internal)?;
    if job.is_retry() {
        if let Some(outcome) = committed_earlier(job, &params).await? {
            return Ok(outcome);
        }
        tracing::info!(
            job_id = job.row.id,
            "an earlier attempt of this fetch was interrupted; fetching again from the start"
        );
    }
    let state = &job.state;
    let (user, password) = secrets::load(&state.db, &state.secret_key, job.row.id).await?;
    let source = FetchSource::parse(&params.url, user.as_deref(), password.as_deref())?;
    let checksum = Checksum::parse(params.checksum.as_deref())?;
    let staging = state.storage.staging_path(&job.row.uuid);
    let disk_size = params.disk_size as u64;

    let (fetched, wire_bytes) =
        fetch_to_staging(job, &source, &checksum, disk_size, &staging).await;
    let result = match fetched.and_then(|written| verify(&checksum, written)) {
        Ok(written) => {
            tracing::info!(
                job_id = job.row.id,
                url = %source.redacted(),
                compression = written.compression.name(),
                image_bytes = written.image_bytes,
                bytes_received = wire_bytes,
                bytes_written = written.stats.bytes_written,
                iso = written.is_iso,
                "image fetched"
            );
            finalise(job, &params, &staging, &written, wire_bytes).await
        }
        Err(err) => Err(err),
    };
    if result.is_err() {
        remove_staged(&staging).await;
        // The bandwidth was used even though nothing was made.
        if let Err(err) = record_usage_now(job, wire_bytes).await {
            tracing::warn!(job_id = job.row.id, error = %err, "recording fetched bytes failed");
        }
    }
    result
}

/// If an interrupted attempt committed its disk or image, that is the job's result.
async fn committed_earlier(
    job: &RunningJob,
    params: &FetchParams,
) -> ApiResult<Option<JobOutcome>> {
    let item_id: Option<i64> = sqlx::query_scalar("SELECT item_id FROM jobs WHERE id = $1")
        .bind(job.row.id)
        .fetch_one(job.state.db.pool())
        .await?;
    Ok(item_id.map(|id| JobOutcome {
        item_type: Some(params.item_type()),
        item_id: Some(id),
    }))
}

/// Downloads, decompresses, hashes and thin-writes into `staging`. Returns what was written
/// and the bytes received over the wire (also when it failed).
async fn fetch_to_staging(
    job: &RunningJob,
    source: &FetchSource,
    checksum: &Checksum,
    disk_size: u64,
    staging: &Path,
) -> (ApiResult<Written>, u64) {
    let progress = job.progress.clone();
    progress.set_phase("connecting");
    let opened = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(staging)
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
    let (wire, stages) = match pipeline::start(file, disk_size, checksum, progress.clone()) {
        Ok(started) => started,
        Err(e) => return (Err(ApiError::internal(e)), 0),
    };
    let guard = AddressGuard::new(job.state.config.allow_fetch_from.clone());
    let tls = &job.state.fetch_tls;
    let cancel = progress.cancel_token().clone();
    let downloaded = match source.url.scheme() {
        "http" | "https" => {
            tokio::select! {
                r = http::download(source, &guard, tls, &wire) => r,
                _ = cancel.cancelled() => Err(ApiError::Cancelled),
            }
        }
        _ => {
            let (source, wire, tls) = (source.clone(), wire.clone(), tls.clone());
            let runtime = tokio::runtime::Handle::current();
            let task = tokio::task::spawn_blocking(move || {
                ftp::download(&source, &guard, &tls, &wire, runtime)
            });
            tokio::select! {
                r = task => r.map_err(ApiError::from).and_then(|r| r),
                _ = cancel.cancelled() => Err(ApiError::Cancelled),
            }
        }
    };
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

/// Makes the staged file a volume, and the volume a disk or image, with the usage record.
async fn finalise(
    job: &RunningJob,
    params: &FetchParams,
    staging: &Path,
    written: &Written,
    wire_bytes: u64,
) -> ApiResult<JobOutcome> {
    job.progress.set_phase("finalising");
    job.check_cancelled()?;
    let state = &job.state;
    let customer_id = job.row.customer_id;
    let media = if written.is_iso { "iso" } else { "disk" };
    let storage = state.storage.clone();
    let staged: PathBuf = staging.to_path_buf();
    let size = params.disk_size as u64;
    let volume = tokio::task::spawn_blocking(move || storage.adopt_staged(&staged, size)).await??;
    let committed: ApiResult<i64> = async {
        let mut tx = state.db.begin_write().await?;
        let volume_id = volumes::insert(&mut tx, &volume, None).await?;
        let item_id = if params.make_image {
            image::insert_image(
                &mut tx,
                NewImage {
                    customer_id: Some(customer_id),
                    name: &params.name,
                    size: params.disk_size,
                    media,
                    default_username: params.image_default_username.as_deref(),
                    generate_password: true,
                    volume_id: Some(volume_id),
                    source_job_id: Some(job.row.id),
                },
            )
            .await?
            .image_id
        } else {
            vdc::ensure_own(&mut tx, customer_id, params.vdc_id).await?;
            disk::insert_disk(
                &mut tx,
                NewDisk {
                    customer_id,
                    vdc_id: params.vdc_id,
                    name: &params.name,
                    capacity: params.disk_size,
                    media,
                    volume_id,
                    image_id: None,
                    product_offer_id: Some(params.disk_productoffer_id),
                    server_id: None,
                    attach_index: None,
                    origin_server_id: None,
                },
            )
            .await?
            .id
        };
        record_usage(&mut tx, customer_id, job.row.id, wire_bytes).await?;
        // Recorded with the result, so a retry after a crash finds it instead of fetching again.
        sqlx::query("UPDATE jobs SET item_type = $1, item_id = $2 WHERE id = $3")
            .bind(params.item_type())
            .bind(item_id)
            .bind(job.row.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(item_id)
    }
    .await;
    match committed {
        Ok(item_id) => Ok(JobOutcome {
            item_type: Some(params.item_type()),
            item_id: Some(item_id),
        }),
        Err(err) => {
            volumes::delete_files(state.storage.clone(), vec![volume]).await;
            Err(err)
        }
    }
}

async fn record_usage(
    conn: &mut AnyConnection,
    customer_id: i64,
    job_id: i64,
    bytes: u64,
) -> ApiResult<()> {
    if bytes == 0 {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO usage_records (customer_id, kind, job_id, quantity, created) \
         VALUES ($1, 'bytes_fetched', $2, $3, $4)",
    )
    .bind(customer_id)
    .bind(job_id)
    .bind(bytes as i64)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

async fn record_usage_now(job: &RunningJob, bytes: u64) -> ApiResult<()> {
    let mut conn = job.state.db.pool().acquire().await?;
    record_usage(&mut conn, job.row.customer_id, job.row.id, bytes).await
}

async fn remove_staged(staging: &Path) {
    match tokio::fs::remove_file(staging).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(file = %staging.display(), error = %e, "could not remove a staged file")
        }
        _ => {}
    }
}
