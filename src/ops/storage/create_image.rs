//! CreateImage: a byte-for-byte copy of a disk that becomes a private image, made by a job.
//!
//! The image refers to nothing of the disk (that is what tells an image from a snapshot): its
//! volume is a flat raw copy (`Storage::copy_flat`), which visits only the data, so a mostly
//! empty 20 GB disk costs time and space in proportion to what it holds. Servers and disks made
//! from the image are thin clones of that copy.
//!
//! The copy must see a disk that holds still. CreateImage is refused while the disk's server
//! runs, and until the job ends the disk is pinned: its server cannot start and the disk cannot
//! be deleted, destroyed with its server or reverted ([`ensure_disk_not_being_imaged`]). The job
//! names the disk as its item while it runs, which is what the pin looks for; when it succeeds
//! its item becomes the new image.
//!
//! Like FetchDisk, the job makes nothing visible before it is complete: the copy goes to the
//! attempt's staging file (`<data>/staging/<job uuid>-<attempt>.part`), reporting its progress
//! and stopping when the job is cancelled, and becomes a volume only when it is whole, in the
//! job's fenced commit. An attempt resumed after a crash whose predecessor committed the image
//! is reported by the job system without running; otherwise it copies again from the start.

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

use crate::error::{ApiError, ApiResult};
use crate::jobs::{JobKind, JobOutcome, JobStatus, Lane, RunningJob};
use crate::ops::accounts::quota::{self, Need};
use crate::ops::state::AppState;
use crate::ops::storage::image::{self, NewImage};
use crate::ops::{Ctx, args, server_status, storage::disk, validate};
use crate::storage::volumes;

pub async fn create_image(ctx: &Ctx, a: args::CreateImage) -> ApiResult<i64> {
    let name = validate::name("name", &a.name)?;
    let default_username = match a.default_username.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(user) => Some(validate::name("default_username", user)?),
    };
    let mut tx = ctx.begin_write().await?;
    // Lock the disk's row (and below its server's) so that a concurrent DeleteDisk, RevertDisk
    // or StartServer either sees this job or is seen by it.
    disk::lock_own_disk(&mut tx, ctx.customer_id(), a.disk_id).await?;
    let disk = disk::own_disk(&mut tx, ctx.customer_id(), a.disk_id).await?;
    if let Some(server_id) = disk.server_id {
        server_status::lock_stopped_server(&mut tx, server_id, "making an image of its disk")
            .await?;
    }
    // The image will have the disk's capacity; the queued job reserves it.
    let need = Need::job_making(disk.capacity);
    quota::ensure_room(&mut tx, &ctx.state, ctx.customer_id(), need).await?;
    let job = CreateImageJob {
        disk_id: disk.id,
        name,
        default_username,
        generate_password: a.generate_password,
    };
    let description = format!("Create image \"{}\" from disk \"{}\"", job.name, disk.name);
    let job_id = ctx
        .enqueue(&mut tx, job, description)
        // The pin on the disk (below) looks for it as the job's item.
        .item("disk", disk.id)
        .reserving(disk.capacity)
        .await?;
    tx.commit().await?;
    Ok(job_id)
}

// An unfinished CreateImage job on one of the disks `$4` selects. $1..$3: unfinished
// statuses, $5 the kind's name.
macro_rules! select_pinning_job {
    ($disks:literal) => {
        concat!(
            "SELECT id FROM jobs WHERE job_type = $5 AND item_type = 'disk' \
             AND status IN ($1, $2, $3) AND item_id IN (",
            $disks,
            ") ORDER BY id LIMIT 1"
        )
    };
}

async fn pinning_job(
    conn: &mut AnyConnection,
    sql: &'static str,
    id: i64,
) -> ApiResult<Option<i64>> {
    let [a, b, c] = JobStatus::UNFINISHED.map(JobStatus::code);
    Ok(sqlx::query_scalar(sql)
        .bind(a)
        .bind(b)
        .bind(c)
        .bind(id)
        .bind(CreateImageJob::NAME)
        .fetch_optional(conn)
        .await?)
}

/// Fails with CONFLICT while an image is being made of the disk.
pub async fn ensure_disk_not_being_imaged(conn: &mut AnyConnection, disk_id: i64) -> ApiResult<()> {
    match pinning_job(conn, select_pinning_job!("$4"), disk_id).await? {
        None => Ok(()),
        Some(job_id) => Err(ApiError::Conflict(format!(
            "an image is being made of disk {disk_id} (job {job_id}); wait until it has finished"
        ))),
    }
}

/// Fails with CONFLICT while an image is being made of one of the server's disks.
pub async fn ensure_server_disks_not_being_imaged(
    conn: &mut AnyConnection,
    server_id: i64,
) -> ApiResult<()> {
    let sql = select_pinning_job!("SELECT id FROM disks WHERE server_id = $4");
    match pinning_job(conn, sql, server_id).await? {
        None => Ok(()),
        Some(job_id) => Err(ApiError::Conflict(format!(
            "an image is being made of a disk of server {server_id} (job {job_id}); \
             wait until it has finished"
        ))),
    }
}

/// A CreateImage job: a flat copy of the disk becomes a private image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateImageJob {
    pub disk_id: i64,
    pub name: String,
    pub default_username: Option<String>,
    pub generate_password: bool,
}

impl JobKind for CreateImageJob {
    const NAME: &'static str = "CreateImage";
    const LANE: Lane = Lane::Long;
    type Context = AppState;

    async fn run(self, job: &RunningJob<AppState>) -> ApiResult<JobOutcome> {
        let state = &job.state;
        if job.is_retry() {
            tracing::info!(
                job_id = job.row.id,
                "an earlier attempt of this job was interrupted; copying again from the start"
            );
        }
        job.check_cancelled()?;
        // A nearly full node writes nothing new.
        quota::ensure_node_free_space(state).await?;
        let (disk, source) = {
            let mut conn = state.db.pool().acquire().await?;
            let disk = disk::own_disk(&mut conn, job.row.customer_id, self.disk_id).await?;
            let source = volumes::get(&mut conn, disk.volume_id)
                .await?
                .volume_file()?;
            (disk, source)
        };
        let size = source.size;
        job.progress.set_phase("copying");
        job.progress.set_total(Some(size));
        let (storage, progress, staging) = (
            state.storage.clone(),
            job.progress.clone(),
            job.staging_name(),
        );
        let copy =
            tokio::task::spawn_blocking(move || storage.copy_flat(&source, &staging, &*progress))
                .await??;

        job.progress.set_phase("finalising");
        if let Err(err) = job.check_cancelled() {
            volumes::delete_files(state.storage.clone(), vec![copy]).await;
            return Err(err);
        }
        let saved = async {
            let mut tx = job.begin_fenced().await?;
            let volume_id = volumes::insert(&mut tx, &copy, None).await?;
            let image = image::insert_image(
                &mut tx,
                NewImage {
                    customer_id: Some(job.row.customer_id),
                    name: &self.name,
                    size: disk.capacity,
                    media: &disk.media,
                    default_username: self.default_username.as_deref(),
                    generate_password: self.generate_password,
                    volume_id: Some(volume_id),
                    source_job_id: Some(job.row.id),
                    // Provenance: the copy carries the bits of the image the disk was made
                    // from (its product offer and its publication's limits follow them).
                    source_image_id: disk.image_id,
                    source_format: disk.source_format.as_deref(),
                },
            )
            .await?;
            job.commit(tx, JobOutcome::item("image", image.image_id))
                .await
        }
        .await;
        if let Err(err) = &saved {
            volumes::discard_uncommitted(state.storage.clone(), vec![copy], err).await;
        }
        saved
    }
}
