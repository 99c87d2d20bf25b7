//! FetchDisk: checks the request and queues a [`FetchDiskJob`], which has the image writer
//! (`crate::fetch`) fetch the image into a staging file and then makes that file a disk or an
//! image, in one fenced transaction with the usage line. On storage that writes volumes in
//! place (RBD, [`crate::storage::Storage::streams_staging`]) a raw image streams into a staging
//! volume instead, and no local file is made.
//!
//! Nothing half-made is visible: the data lives in the attempt's staging file (or volume) until the job
//! succeeds, and is removed when it fails or is cancelled (by the job system, which calls
//! [`crate::ops::jobs::discard_staged`]). A job interrupted by a crash is claimed again after the
//! restart; it then fetches from the start (an uncompressed prefix cannot be trusted without
//! re-reading it, and a decompressor's state is lost), or, if the earlier attempt had already
//! committed its result, the job system reports that result. The startup sweep removes staging
//! files of jobs that are not running.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::Config;
use crate::error::ApiResult;
use crate::fetch::{
    self, Checksum, Credentials, FetchLimits, FetchPolicy, FetchSource, ImageFormat,
};
use crate::jobs::{JobKind, JobOutcome, Lane, RunningJob, Slot};
use crate::metrics::METRICS;
use crate::ops::accounts::quota::{self, Need};
use crate::ops::state::AppState;
use crate::ops::storage::disk::{self, NewDisk};
use crate::ops::storage::image::{self, NewImage};
use crate::ops::{Ctx, accounts::vdc, args, storage::product_offer, storage::usage, validate};
use crate::storage::{self, Storage, volumes};

pub async fn fetch_disk(ctx: &Ctx, a: args::FetchDisk) -> ApiResult<i64> {
    let name = validate::name("name", &a.name)?;
    let source = FetchSource::parse(&a.url, a.conn_user.as_deref(), a.conn_pass.as_deref())?;
    let checksum = Checksum::parse(a.checksum.as_deref())?;
    let default_username = match a.image_default_username.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(user) => Some(validate::name("image_default_username", user)?),
    };
    let mut tx = ctx.begin_write().await?;
    vdc::ensure_own(&mut tx, ctx.customer_id(), a.vdc_id).await?;
    let offer = product_offer::offer_of_kind(
        &mut tx,
        a.disk_productoffer_id,
        "disk",
        "disk_productoffer_id",
    )
    .await?;
    // The disk or image the job will make counts from now on: a queued fetch reserves it.
    let need = Need::job_making(offer.disk_size);
    quota::ensure_room(&mut tx, &ctx.state, ctx.customer_id(), need).await?;
    let job = FetchDiskJob {
        url: source.url.clone(),
        checksum,
        name,
        disk_productoffer_id: offer.product_offer_id,
        disk_size: offer.disk_size,
        vdc_id: a.vdc_id,
        make_image: a.make_image,
        image_default_username: default_username,
    };
    let name = format!(
        "Fetch {} \"{}\" from {}",
        job.item_type(),
        job.name,
        source.redacted()
    );
    let (item_type, reserved, make_image, vdc_id) =
        (job.item_type(), job.disk_size, job.make_image, job.vdc_id);
    let mut queued = ctx
        .enqueue(&mut tx, job, name)
        .item_type(item_type)
        .reserving(reserved);
    if !make_image {
        queued = queued.in_vdc(vdc_id);
    }
    let job_id = queued.await?;
    if let Some(credentials) = source.credentials() {
        ctx.state
            .jobs
            .seal_secret(&mut tx, job_id, &credentials)
            .await?;
    }
    tx.commit().await?;
    Ok(job_id)
}

/// A FetchDisk job: the image at `url` (its credentials and query string are sealed apart, see
/// [`crate::jobs::JobQueue::seal_secret`]) becomes a disk of the offer's size in the VDC, or
/// with `make_image` a private image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchDiskJob {
    pub url: Url,
    pub checksum: Checksum,
    pub name: String,
    pub disk_productoffer_id: i64,
    pub disk_size: i64,
    pub vdc_id: i64,
    pub make_image: bool,
    pub image_default_username: Option<String>,
}

impl JobKind for FetchDiskJob {
    const NAME: &'static str = "FetchDisk";
    const LANE: Lane = Lane::Long;
    const SLOT: Slot = Slot::Transfer;
    type Context = AppState;

    async fn run(self, job: &RunningJob<AppState>) -> ApiResult<JobOutcome> {
        let state = &job.state;
        // A nearly full node writes nothing new.
        quota::ensure_node_free_space(state).await?;
        let credentials: Option<Credentials> = job.secret().await?;
        let source = FetchSource::with_credentials(self.url.clone(), credentials);
        let staging = state.storage.staging_path(&job.staging_name());
        let policy = FetchPolicy {
            allow: state.config.allow_fetch_from.clone(),
            tls: state.fetch_tls.clone(),
            max_decompression_memory: state.config.max_decompression_memory,
            limits: fetch_limits(&state.config),
            min_free_space: state.min_free_space,
        };
        let volume = state
            .storage
            .streams_staging()
            .then(|| make_volume(state.storage.clone(), job.staging_name()));
        let started = std::time::Instant::now();
        let fetched = fetch::fetch_image(
            &source,
            &self.checksum,
            self.disk_size as u64,
            &staging,
            volume,
            &policy,
            job.progress.clone(),
        )
        .await;
        METRICS.fetch_bytes.inc_by(fetched.wire_bytes);
        match fetched.result {
            Ok(written) => {
                let seconds = started.elapsed().as_secs_f64();
                if seconds > 0.0 {
                    METRICS
                        .fetch_throughput
                        .observe(written.image_bytes as f64 / seconds);
                }
                let staged = match written.streamed {
                    // Closed before it becomes a volume.
                    Some(volume) => {
                        drop(volume);
                        Staged::Volume(job.staging_name())
                    }
                    None => Staged::File(staging),
                };
                self.commit_staged(job, staged, written.format, fetched.wire_bytes)
                    .await
            }
            Err(err) => {
                // The bandwidth was used even though nothing was made.
                if let Err(usage_err) = record_failed_transfer(job, fetched.wire_bytes).await {
                    tracing::warn!(job_id = job.row.id, error = %usage_err,
                        "recording fetched bytes failed");
                }
                Err(err.into())
            }
        }
    }
}

impl FetchDiskJob {
    fn item_type(&self) -> &'static str {
        if self.make_image { "image" } else { "disk" }
    }

    /// Makes the fetched file `staged` (raw by now; an ISO image when `format` is, and
    /// `format` the image's as fetched, shown as its `source_format`) a volume, and the volume a
    /// disk or an image, with the usage line of the `wire_bytes` received: all in one
    /// transaction that commits only while this attempt holds the job, so two attempts racing
    /// to commit make one disk and one usage line, and the loser leaves no file behind.
    pub async fn commit(
        &self,
        job: &RunningJob<AppState>,
        staged: &Path,
        format: ImageFormat,
        wire_bytes: u64,
    ) -> ApiResult<JobOutcome> {
        let staged = Staged::File(staged.to_path_buf());
        self.commit_staged(job, staged, format, wire_bytes).await
    }

    /// [`Self::commit`] of a staging file or a staging volume.
    async fn commit_staged(
        &self,
        job: &RunningJob<AppState>,
        staged: Staged,
        format: ImageFormat,
        wire_bytes: u64,
    ) -> ApiResult<JobOutcome> {
        job.progress.set_phase("finalising");
        job.check_cancelled()?;
        let state = &job.state;
        let customer_id = job.row.customer_id;
        let media = if format == ImageFormat::Iso {
            "iso"
        } else {
            "disk"
        };
        let source_format = Some(format.name());
        let (storage, size) = (state.storage.clone(), self.disk_size as u64);
        let volume = tokio::task::spawn_blocking(move || match staged {
            Staged::File(path) => storage.adopt_staged(&path, size),
            Staged::Volume(name) => storage.adopt_staging_volume(&name, size),
        })
        .await??;
        let committed = async {
            let mut tx = job.begin_fenced().await?;
            let volume_id = volumes::insert(&mut tx, &volume, None).await?;
            let item_id = if self.make_image {
                image::insert_image(
                    &mut tx,
                    NewImage {
                        customer_id: Some(customer_id),
                        name: &self.name,
                        size: self.disk_size,
                        media,
                        default_username: self.image_default_username.as_deref(),
                        generate_password: true,
                        volume_id: Some(volume_id),
                        source_job_id: Some(job.row.id),
                        // Fetched bits come from outside: the image is a root.
                        source_image_id: None,
                        source_format,
                    },
                )
                .await?
                .image_id
            } else {
                vdc::ensure_own(&mut tx, customer_id, self.vdc_id).await?;
                disk::insert_disk(
                    &mut tx,
                    NewDisk {
                        customer_id,
                        vdc_id: self.vdc_id,
                        name: &self.name,
                        capacity: self.disk_size,
                        media,
                        volume_id,
                        image_id: None,
                        product_offer_id: Some(self.disk_productoffer_id),
                        server_id: None,
                        attach_index: None,
                        origin_server_id: None,
                        source_format,
                    },
                )
                .await?
                .id
            };
            usage::record_bytes_fetched(&mut tx, customer_id, job.row.id, wire_bytes).await?;
            job.commit(tx, JobOutcome::item(self.item_type(), item_id))
                .await
        }
        .await;
        if let Err(err) = &committed {
            volumes::discard_uncommitted(state.storage.clone(), vec![volume], err).await;
        }
        committed
    }
}

/// Where a fetched image waits to become a volume.
enum Staged {
    File(std::path::PathBuf),
    /// The staging volume of this staging name.
    Volume(String),
}

/// Makes the attempt's staging volume, for a raw image to stream into.
fn make_volume(storage: Arc<dyn Storage>, staging: String) -> fetch::MakeVolume {
    Box::new(move |size| {
        storage
            .create_staging_volume(&staging, size)
            .map(|volume| Box::new(FetchInto(volume)) as Box<dyn fetch::Volume>)
            .map_err(std::io::Error::other)
    })
}

/// A storage's staging volume as the image writer writes into it.
struct FetchInto(Box<dyn storage::StagingVolume>);

impl crate::sparse::Destination for FetchInto {
    fn write_all_at(&mut self, data: &[u8], offset: u64) -> std::io::Result<()> {
        self.0.write_all_at(data, offset)
    }

    fn zero_out(&mut self, start: u64, len: u64) -> std::io::Result<()> {
        self.0.zero_out(start, len)
    }

    fn writes_done(&mut self) -> std::io::Result<()> {
        self.0.writes_done()
    }
}

impl fetch::Volume for FetchInto {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.0.read_at(buf, offset)
    }

    fn zero(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        self.0.zero(offset, len)
    }
}

/// The fetch budgets the server's flags set (0 turns a deadline, minimum or bound off).
fn fetch_limits(config: &Config) -> FetchLimits {
    FetchLimits {
        deadline: (config.fetch_deadline > 0).then(|| Duration::from_secs(config.fetch_deadline)),
        min_throughput: config.fetch_min_throughput,
        grace: Duration::from_secs(config.fetch_grace),
        max_retries: config.fetch_max_retries,
        max_padding: config.fetch_max_padding,
    }
}

/// Bills the bytes a failed fetch received, if this attempt still holds the job and no
/// earlier attempt billed it (an attempt that was taken over bills nothing; a job is billed
/// once: [`usage::record_bytes_fetched`]).
async fn record_failed_transfer(job: &RunningJob<AppState>, wire_bytes: u64) -> ApiResult<()> {
    if wire_bytes == 0 {
        return Ok(());
    }
    let mut tx = job.begin_fenced().await?;
    usage::record_bytes_fetched(&mut tx, job.row.customer_id, job.row.id, wire_bytes).await?;
    tx.commit().await?;
    Ok(())
}
