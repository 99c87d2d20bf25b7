//! Jobs as the API shows them (GetJob, ListJobs, CancelJob, WaitForJob), and what the
//! operation layer gives the job system to run them with.

use std::time::Duration;

use crate::error::{ApiError, ApiResult};
use crate::ops::{Ctx, args, page};
use futures::future::BoxFuture;

use crate::jobs::queue::ListFilter;
use crate::jobs::worker::{Pool, Staged};
use crate::jobs::{CancelRequest, JobRow, JobStatus, Lane};
use crate::ops::state::AppState;
use crate::ops::wire::Timestamp;
use crate::wire_struct;

/// The longest WaitForJob waits.
pub const MAX_WAIT_SECONDS: i64 = 300;

wire_struct! {
    /// A job. `status`: 1 successful, 2 in progress, 3 failed, 4 cancelled, 6 not started,
    /// 7 waiting (for a free slot), named in `status_name`. `item_type`/`item_id` name what it works on or produced;
    /// `phase`, `progress` (percent), `bytes_done` and `bytes_total` show how far it is.
    pub struct Job as "Job" {
        pub job_id: i64,
        pub job_uuid: String,
        pub job_type: String,
        pub name: String,
        pub status: i64,
        pub item_type: Option<String>,
        pub item_id: Option<i64>,
        pub phase: Option<String>,
        pub progress: i64,
        pub bytes_done: i64,
        pub bytes_total: Option<i64>,
        pub error_code: Option<String>,
        pub error_message: Option<String>,
        pub created: Timestamp,
        pub started: Option<Timestamp>,
        pub finished: Option<Timestamp>,
        #[since(2)]
        pub status_name: String,
    }
}

impl From<JobRow> for Job {
    fn from(row: JobRow) -> Job {
        Job {
            job_id: row.id,
            job_uuid: row.uuid,
            job_type: row.job_type,
            name: row.name,
            status: row.status,
            item_type: row.item_type,
            item_id: row.item_id,
            phase: row.phase,
            progress: row.progress,
            bytes_done: row.bytes_done,
            bytes_total: row.bytes_total,
            error_code: row.error_code,
            error_message: row.error_message,
            created: Timestamp(row.created),
            started: row.started.map(Timestamp),
            finished: row.finished.map(Timestamp),
            status_name: crate::jobs::JobStatus::name_of(row.status).to_string(),
        }
    }
}

pub async fn get_job(ctx: &Ctx, a: args::GetJob) -> ApiResult<Job> {
    let row = ctx.state.jobs.get(a.job_id, ctx.customer_id()).await?;
    Ok(row.into())
}

/// The job statuses there are (`Job::status`), for ListJobs' filter.
const STATUSES: [JobStatus; 6] = [
    JobStatus::Successful,
    JobStatus::InProgress,
    JobStatus::Failed,
    JobStatus::Cancelled,
    JobStatus::NotStarted,
    JobStatus::Waiting,
];

pub async fn list_jobs(ctx: &Ctx, a: args::ListJobs) -> ApiResult<Vec<Job>> {
    let page = page::descending(a.page_size, a.before_id)?;
    if let Some(status) = a.status
        && !STATUSES.iter().any(|s| s.code() == status)
    {
        return Err(ApiError::invalid(
            "status",
            format!("must be 1, 2, 3, 4, 6 or 7 (a job status), got {status}"),
        ));
    }
    // A kind of job, spelt in any case: FetchDisk, fetchdisk.
    let job_type = match a.job_type.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(wanted) => Some(
            crate::ops::JOB_KINDS
                .iter()
                .map(|kind| kind.name)
                .find(|name| name.eq_ignore_ascii_case(wanted))
                .ok_or_else(|| {
                    let known: Vec<&str> = crate::ops::JOB_KINDS.iter().map(|k| k.name).collect();
                    ApiError::invalid("job_type", format!("must be one of {}", known.join(", ")))
                })?,
        ),
    };
    let filter = ListFilter {
        before_id: page.cursor,
        limit: page.limit,
        status: a.status,
        job_type,
    };
    Ok(ctx
        .state
        .jobs
        .list(ctx.customer_id(), &filter)
        .await?
        .into_iter()
        .map(Job::from)
        .collect())
}

pub async fn cancel_job(ctx: &Ctx, a: args::CancelJob) -> ApiResult<Job> {
    let tx = ctx.begin_write().await?;
    match ctx
        .state
        .jobs
        .cancel_in(tx, a.job_id, ctx.customer_id())
        .await?
    {
        CancelRequest::NotFound => return Err(ApiError::not_found("job", a.job_id)),
        CancelRequest::AlreadyFinished => {
            return Err(ApiError::Conflict(format!(
                "job {} has already finished",
                a.job_id
            )));
        }
        CancelRequest::Requested | CancelRequest::CancelledBeforeStart => {}
    }
    get_job(ctx, args::GetJob { job_id: a.job_id }).await
}

/// Waits for the job to finish. Jobs finishing on this node wake the wait at once; a job on
/// another node is noticed by looking again every half second.
pub async fn wait_for_job(ctx: &Ctx, a: args::WaitForJob) -> ApiResult<Job> {
    if !(0..=MAX_WAIT_SECONDS).contains(&a.timeout_seconds) {
        return Err(ApiError::invalid(
            "timeout_seconds",
            format!(
                "must be between 0 and {MAX_WAIT_SECONDS}, got {}",
                a.timeout_seconds
            ),
        ));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(a.timeout_seconds as u64);
    let mut finished = ctx.state.jobs.subscribe_finished();
    loop {
        let job = ctx.state.jobs.get(a.job_id, ctx.customer_id()).await?;
        if JobStatus::is_finished(job.status) || tokio::time::Instant::now() >= deadline {
            return Ok(job.into());
        }
        let next_look = (tokio::time::Instant::now() + Duration::from_millis(500)).min(deadline);
        let _ = tokio::time::timeout_at(next_look, finished.changed()).await;
    }
}

/// The worker pool of this node: the kinds of [`crate::ops::JOB_KINDS`], run with the application
/// state.
pub fn worker_pool(state: &AppState) -> Pool<AppState> {
    Pool {
        queue: state.jobs.clone(),
        state: state.clone(),
        kinds: &crate::ops::JOB_KINDS,
        workers: |state, lane| match lane {
            Lane::Quick => state.config.quick_workers,
            Lane::Long => state.config.workers,
        },
        discard_staged,
    }
}

/// Removes what an attempt that did not succeed staged: the one place a job's staged data
/// goes.
fn discard_staged(state: &AppState, staged: Staged) -> BoxFuture<'static, ()> {
    let storage = state.storage.clone();
    Box::pin(async move {
        let sweeping = staged.clone();
        let swept =
            tokio::task::spawn_blocking(move || storage.sweep_staging(&|f| !sweeping.covers(f)))
                .await
                .map_err(ApiError::from)
                .and_then(|r| r.map_err(ApiError::from));
        if let Err(err) = swept {
            tracing::warn!(?staged, error = %err, "could not remove staged data");
        }
    })
}
