//! Image hygiene's operations: CheckImage, CheckDisk, CleanImage, GetImageReport and
//! GetDiskReport, and the jobs that run the engine (`crate::hygiene`).
//!
//! Who may do what: a customer checks and cleans only its own images and disks (an
//! administrator also the platform's images); an image published to it answers
//! PERMISSION_DENIED, one it cannot see NOT_FOUND. The report of an image it may use (its own,
//! published to it, the platform's) it may read: receivers see what they are given.
//!
//! The jobs run on the Long lane and count in the customer's `concurrent_jobs` quota like any
//! job. The engine blocks for tens of seconds (it boots libguestfs's appliance), so it runs on
//! a blocking thread, bounded by `--hygiene-memory` and `--hygiene-timeout`; it hears the job's
//! cancellation through its progress.
//!
//! CleanImage never writes the original: it copies the image (`Storage::copy_flat`, a raw
//! volume) under the attempt's staging name, cleans the copy, and commits it as a new private
//! image with the report the engine made of it, in the job's fenced transaction. A failure or
//! a cancellation deletes the copy; nothing is half-made.

use serde::{Deserialize, Serialize};

use super::hygiene_report::{self, HygieneReport, Outcome, Subject};
use crate::error::{ApiError, ApiResult};
use crate::hygiene::{self as engine, CleanOp, HygieneError, Limits, Report};
use crate::jobs::{JobKind, JobOutcome, Lane, RunningJob};
use crate::ops::accounts::quota::{self, Need};
use crate::ops::state::AppState;
use crate::ops::storage::image::{self, ImageRow, NewImage};
use crate::ops::{Ctx, args, storage::disk, validate};
use crate::storage::{VolumeFile, VolumeFormat, volumes};

/// The longest `remove_paths` CleanImage takes, and the longest path.
const MAX_REMOVE_PATHS: usize = 64;
const MAX_PATH_LEN: usize = 1024;

/// The engine's bounds, from the operator's settings.
fn limits(state: &AppState) -> Limits {
    Limits {
        memory_mib: (state.config.hygiene_memory >> 20).min(u32::MAX as u64) as u32,
        timeout: std::time::Duration::from_secs(state.config.hygiene_timeout),
    }
}

/// The engine's error as callers see it. (The engine knows nothing of `ApiError`.)
fn api_error(err: HygieneError) -> ApiError {
    match err {
        HygieneError::Unreadable(reason) => ApiError::ImageUnreadable(reason),
        HygieneError::Cancelled => ApiError::Cancelled,
        // A symbolic link on the way to a path to remove, found in the image.
        err @ HygieneError::InvalidPath(_) => ApiError::invalid("remove_paths", err.to_string()),
        err @ HygieneError::Unavailable(_) => ApiError::Storage(err.to_string()),
    }
}

/// An image the caller may check or clean: its own (or, for an administrator, a platform
/// image) that has bits to read.
async fn checkable_image(ctx: &Ctx, image_id: i64) -> ApiResult<ImageRow> {
    let mut conn = ctx.state.db.pool().acquire().await?;
    let image = image::changeable_image(&mut conn, &ctx.caller, image_id).await?;
    if image.volume_id.is_none() {
        return Err(ApiError::invalid(
            "image_id",
            format!("image {image_id} is blank: it holds nothing to check"),
        ));
    }
    if image.media != "disk" {
        return Err(ApiError::invalid(
            "image_id",
            format!("image {image_id} is a CD image (iso): only disk images are checked"),
        ));
    }
    Ok(image)
}

pub async fn check_image(ctx: &Ctx, a: args::CheckImage) -> ApiResult<i64> {
    let image = checkable_image(ctx, a.image_id).await?;
    let mut tx = ctx.begin_write().await?;
    quota::ensure_room(&mut tx, &ctx.state, ctx.customer_id(), Need::job_making(0)).await?;
    let job = CheckImageJob { image_id: image.id };
    let name = format!("Check image \"{}\"", image.name);
    let job_id = ctx
        .enqueue(&mut tx, job, name)
        .item("image", image.id)
        .await?;
    tx.commit().await?;
    Ok(job_id)
}

pub async fn check_disk(ctx: &Ctx, a: args::CheckDisk) -> ApiResult<i64> {
    let mut tx = ctx.begin_write().await?;
    let disk = disk::own_disk(&mut tx, ctx.customer_id(), a.disk_id).await?;
    if disk.media != "disk" {
        return Err(ApiError::invalid(
            "disk_id",
            format!("disk {} is a CD (iso): only disks are checked", disk.id),
        ));
    }
    quota::ensure_room(&mut tx, &ctx.state, ctx.customer_id(), Need::job_making(0)).await?;
    let job = CheckDiskJob { disk_id: disk.id };
    let name = format!("Check disk \"{}\"", disk.name);
    let job_id = ctx
        .enqueue(&mut tx, job, name)
        .item("disk", disk.id)
        .await?;
    tx.commit().await?;
    Ok(job_id)
}

/// The cleaning steps asked for: the how-to's list when none is named, and `remove_paths`.
fn clean_ops(
    operations: Option<&[String]>,
    remove_paths: Option<&[String]>,
) -> ApiResult<Vec<CleanOp>> {
    let mut ops = match operations {
        None | Some([]) => CleanOp::defaults(),
        Some(names) => {
            let mut ops = Vec::new();
            for name in names {
                let op = parse_op(name)?;
                if !ops.contains(&op) {
                    ops.push(op);
                }
            }
            ops
        }
    };
    let paths = remove_paths.unwrap_or_default();
    if paths.len() > MAX_REMOVE_PATHS {
        return Err(ApiError::invalid(
            "remove_paths",
            format!("names more than {MAX_REMOVE_PATHS} paths"),
        ));
    }
    for path in paths {
        engine::validate_path(path)
            .map_err(|err| ApiError::invalid("remove_paths", err.to_string()))?;
        if path.len() > MAX_PATH_LEN || path.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "remove_paths",
                format!("{path:?} is too long or holds control characters"),
            ));
        }
    }
    if !paths.is_empty() {
        ops.push(CleanOp::RemovePaths(paths.to_vec()));
    }
    Ok(ops)
}

/// The names CleanImage's `operations` take: the engine's step names.
pub const OPERATION_NAMES: &[&str] = &[
    "remove_ssh_host_keys",
    "lock_passwords",
    "remove_authorized_keys",
    "truncate_logs",
    "remove_shell_histories",
    "empty_machine_id",
    "remove_cloud_init_state",
    "remove_dhcp_leases",
    "remove_persistent_net_rules",
    "empty_tmp",
];

fn parse_op(name: &str) -> ApiResult<CleanOp> {
    let name = name.trim().to_ascii_lowercase();
    if !OPERATION_NAMES.contains(&name.as_str()) {
        return Err(ApiError::invalid(
            "operations",
            format!(
                "{name:?} is not a cleaning step (one of: {})",
                OPERATION_NAMES.join(", ")
            ),
        ));
    }
    serde_json::from_value(serde_json::Value::String(name)).map_err(ApiError::internal)
}

pub async fn clean_image(ctx: &Ctx, a: args::CleanImage) -> ApiResult<i64> {
    let operations = clean_ops(a.operations.as_deref(), a.remove_paths.as_deref())?;
    let image = checkable_image(ctx, a.image_id).await?;
    let name = match a.name.as_deref().map(str::trim) {
        None | Some("") => validate::name("name", &format!("{} (cleaned)", image.name))
            .or_else(|_| validate::name("name", "cleaned image"))?,
        Some(name) => validate::name("name", name)?,
    };
    let mut tx = ctx.begin_write().await?;
    // The copy will have the image's size; the queued job reserves it.
    let need = Need::job_making(image.size);
    quota::ensure_room(&mut tx, &ctx.state, ctx.customer_id(), need).await?;
    let description = format!("Clean image \"{}\" into \"{name}\"", image.name);
    let job = CleanImageJob {
        image_id: image.id,
        name,
        operations,
    };
    let job_id = ctx
        .enqueue(&mut tx, job, description)
        .item_type("image")
        .reserving(image.size)
        .await?;
    tx.commit().await?;
    Ok(job_id)
}

pub async fn get_image_report(ctx: &Ctx, a: args::GetImageReport) -> ApiResult<HygieneReport> {
    let mut conn = ctx.state.db.pool().acquire().await?;
    let image = image::usable_image(&mut conn, &ctx.caller, a.image_id).await?;
    hygiene_report::load(&mut conn, Subject::Image(image.id)).await
}

pub async fn get_disk_report(ctx: &Ctx, a: args::GetDiskReport) -> ApiResult<HygieneReport> {
    let mut conn = ctx.state.db.pool().acquire().await?;
    let disk = disk::own_disk(&mut conn, ctx.customer_id(), a.disk_id).await?;
    hygiene_report::load(&mut conn, Subject::Disk(disk.id)).await
}

/// Runs the engine's check of `volume` on a blocking thread.
async fn run_check(
    job: &RunningJob<AppState>,
    volume: &VolumeFile,
) -> Result<Report, HygieneError> {
    let location = job.state.storage.location(volume);
    let (limits, progress) = (limits(&job.state), job.progress.clone());
    tokio::task::spawn_blocking(move || engine::check(&location, limits, &progress))
        .await
        .unwrap_or_else(|err| {
            Err(HygieneError::Unavailable(format!(
                "the check panicked: {err}"
            )))
        })
}

/// Stores a check's outcome for `subject` (an unreadable one too, so that lists show it) and
/// gives the job's end: its item, or IMAGE_UNREADABLE.
async fn finish_check(
    job: &RunningJob<AppState>,
    subject: Subject,
    checked: Result<Report, HygieneError>,
) -> ApiResult<JobOutcome> {
    let (item_type, item_id) = match subject {
        Subject::Image(id) => ("image", id),
        Subject::Disk(id) => ("disk", id),
    };
    match checked {
        Ok(report) => {
            let mut tx = job.begin_fenced().await?;
            hygiene_report::store(&mut tx, subject, Outcome::Read(&report), job.row.id).await?;
            job.commit(tx, JobOutcome::item(item_type, item_id)).await
        }
        Err(HygieneError::Unreadable(reason)) => {
            let mut tx = job.begin_fenced().await?;
            hygiene_report::store(&mut tx, subject, Outcome::Unreadable(&reason), job.row.id)
                .await?;
            tx.commit().await?;
            Err(ApiError::ImageUnreadable(reason))
        }
        Err(err) => Err(api_error(err)),
    }
}

/// A CheckImage job: reads the image's file systems and stores what they give away.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckImageJob {
    pub image_id: i64,
}

impl JobKind for CheckImageJob {
    const NAME: &'static str = "CheckImage";
    const LANE: Lane = Lane::Long;
    type Context = AppState;

    async fn run(self, job: &RunningJob<AppState>) -> ApiResult<JobOutcome> {
        job.check_cancelled()?;
        let volume = {
            let mut conn = job.state.db.pool().acquire().await?;
            let image = image::image_by_id(&mut conn, self.image_id).await?;
            let volume_id = image
                .volume_id
                .ok_or(ApiError::not_found("image", self.image_id))?;
            volumes::get(&mut conn, volume_id).await?.volume_file()?
        };
        check_volume(job, Subject::Image(self.image_id), &volume).await
    }
}

/// Checks `volume` and stores the report of `subject`. A raw volume (an image's always is:
/// FetchDisk, CreateImage and CleanImage write nothing else; on RBD every volume is, a disk an
/// RBD clone) is read where it lies, never written (on RBD through the cluster, by the
/// engine's own read-only exporter); any other (a disk's thin overlay file) through a flat
/// copy.
async fn check_volume(
    job: &RunningJob<AppState>,
    subject: Subject,
    volume: &VolumeFile,
) -> ApiResult<JobOutcome> {
    let checked = if volume.format == VolumeFormat::Raw {
        job.progress.set_phase("checking");
        run_check(job, volume).await
    } else {
        check_flat_copy(job, volume).await?
    };
    finish_check(job, subject, checked).await
}

/// Checks a flat raw copy of a volume that is not raw (a disk made from an image is a thin
/// overlay on it), made under the attempt's staging name and deleted afterwards: the engine
/// never follows a backing file named inside a volume.
async fn check_flat_copy(
    job: &RunningJob<AppState>,
    volume: &VolumeFile,
) -> ApiResult<Result<Report, HygieneError>> {
    let state = &job.state;
    quota::ensure_node_free_space(state).await?;
    job.progress.set_phase("copying");
    job.progress.set_total(Some(volume.size));
    let (storage, progress, staging, source) = (
        state.storage.clone(),
        job.progress.clone(),
        job.staging_name(),
        volume.clone(),
    );
    let copy =
        tokio::task::spawn_blocking(move || storage.copy_flat(&source, &staging, &*progress))
            .await??;
    job.progress.set_phase("checking");
    let checked = run_check(job, &copy).await;
    volumes::delete_files(state.storage.clone(), vec![copy]).await;
    Ok(checked)
}

/// A CheckDisk job: CheckImage's check of one of the customer's disks, as it is now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckDiskJob {
    pub disk_id: i64,
}

impl JobKind for CheckDiskJob {
    const NAME: &'static str = "CheckDisk";
    const LANE: Lane = Lane::Long;
    type Context = AppState;

    async fn run(self, job: &RunningJob<AppState>) -> ApiResult<JobOutcome> {
        job.check_cancelled()?;
        let volume = {
            let mut conn = job.state.db.pool().acquire().await?;
            let disk = disk::own_disk(&mut conn, job.row.customer_id, self.disk_id).await?;
            volumes::get(&mut conn, disk.volume_id)
                .await?
                .volume_file()?
        };
        check_volume(job, Subject::Disk(self.disk_id), &volume).await
    }
}

/// A CleanImage job: a cleaned copy of an image becomes a new private image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CleanImageJob {
    pub image_id: i64,
    pub name: String,
    pub operations: Vec<CleanOp>,
}

impl JobKind for CleanImageJob {
    const NAME: &'static str = "CleanImage";
    const LANE: Lane = Lane::Long;
    type Context = AppState;

    async fn run(self, job: &RunningJob<AppState>) -> ApiResult<JobOutcome> {
        let state = &job.state;
        job.check_cancelled()?;
        // A nearly full node writes nothing new.
        quota::ensure_node_free_space(state).await?;
        let (original, source) = {
            let mut conn = state.db.pool().acquire().await?;
            let original = image::image_by_id(&mut conn, self.image_id).await?;
            let volume_id = original
                .volume_id
                .ok_or(ApiError::not_found("image", self.image_id))?;
            let source = volumes::get(&mut conn, volume_id).await?.volume_file()?;
            (original, source)
        };
        job.progress.set_phase("copying");
        job.progress.set_total(Some(source.size));
        let (storage, progress, staging) = (
            state.storage.clone(),
            job.progress.clone(),
            job.staging_name(),
        );
        let copy =
            tokio::task::spawn_blocking(move || storage.copy_flat(&source, &staging, &*progress))
                .await??;
        let saved = self.clean_and_commit(job, &original, &copy).await;
        if let Err(err) = &saved {
            volumes::discard_uncommitted(state.storage.clone(), vec![copy], err).await;
        }
        saved
    }
}

impl CleanImageJob {
    async fn clean_and_commit(
        &self,
        job: &RunningJob<AppState>,
        original: &ImageRow,
        copy: &VolumeFile,
    ) -> ApiResult<JobOutcome> {
        job.check_cancelled()?;
        job.progress.set_phase("cleaning");
        let location = job.state.storage.location(copy);
        let (limits, progress, ops) = (
            limits(&job.state),
            job.progress.clone(),
            self.operations.clone(),
        );
        let report =
            tokio::task::spawn_blocking(move || engine::clean(&location, &ops, limits, &progress))
                .await?
                .map_err(api_error)?;
        job.progress.set_phase("finalising");
        job.check_cancelled()?;
        let mut tx = job.begin_fenced().await?;
        let volume_id = volumes::insert(&mut tx, copy, None).await?;
        let image = image::insert_image(
            &mut tx,
            NewImage {
                customer_id: Some(job.row.customer_id),
                name: &self.name,
                size: original.size,
                media: &original.media,
                default_username: original.default_username.as_deref(),
                generate_password: original.generate_password != 0,
                volume_id: Some(volume_id),
                source_job_id: Some(job.row.id),
                // Provenance: the cleaned image carries the original's bits (its product
                // offer and its publication's limits follow them).
                source_image_id: Some(original.id),
                source_format: original.source_format.as_deref(),
            },
        )
        .await?;
        hygiene_report::store(
            &mut tx,
            Subject::Image(image.image_id),
            Outcome::Read(&report),
            job.row.id,
        )
        .await?;
        job.commit(tx, JobOutcome::item("image", image.image_id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_default_to_the_howtos_list_and_take_paths() {
        assert_eq!(clean_ops(None, None).unwrap(), CleanOp::defaults());
        let paths = vec!["/root/test.sh".to_string()];
        let ops = clean_ops(
            Some(&["lock_passwords".into(), " Lock_Passwords".into()]),
            Some(&paths),
        )
        .unwrap();
        assert_eq!(
            ops,
            vec![CleanOp::LockPasswords, CleanOp::RemovePaths(paths.clone())]
        );
        for name in OPERATION_NAMES {
            parse_op(name).unwrap();
        }
        let err = clean_ops(Some(&["format_disk".into()]), None).unwrap_err();
        assert_eq!(err.code(), "INVALID_ARGUMENT");
        for bad in ["relative", "/", "//", "/a/../etc", "/a/./b", "/a\nb"] {
            let err = clean_ops(None, Some(&[bad.to_string()])).unwrap_err();
            assert!(err.to_string().contains("remove_paths"), "{bad}: {err}");
        }
    }
}
