//! The worker pool: claims jobs up to a concurrency bound and runs each with a heartbeat that
//! keeps its lease, publishes its progress and picks up cancellation requests.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::queue::{self, Finish, JobRow};
use super::{JobOutcome, JobProgress, JobStatus};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// How often a running job's progress is written and its lease renewed.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// How often an idle node looks for work queued by other nodes (local work wakes it at once).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// A job interrupted this many times (its node died while running it) fails instead of
/// running again.
pub const MAX_ATTEMPTS: i64 = 3;

/// A job being run: what the job's code gets.
pub struct RunningJob {
    pub state: AppState,
    pub row: JobRow,
    pub progress: Arc<JobProgress>,
}

impl RunningJob {
    /// Whether an earlier attempt at this job was interrupted (its node died or restarted).
    pub fn is_retry(&self) -> bool {
        self.row.attempts > 1
    }

    /// Fails with [`ApiError::Cancelled`] once cancellation was requested.
    pub fn check_cancelled(&self) -> ApiResult<()> {
        if self.progress.is_cancelled() {
            Err(ApiError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Runs the job's code, by type.
async fn dispatch(job: Arc<RunningJob>) -> ApiResult<JobOutcome> {
    match job.row.job_type.as_str() {
        "FetchDisk" => crate::ops::fetch::run_job(&job).await,
        "StartServer" => crate::ops::server::run_start_job(&job).await,
        "StopServer" => crate::ops::server::run_stop_job(&job).await,
        "DestroyServer" => crate::ops::server::run_destroy_job(&job).await,
        crate::ops::create_image::JOB_TYPE => crate::ops::create_image::run_job(&job).await,
        other => Err(ApiError::internal(anyhow::anyhow!(
            "job {} has unknown type {other}",
            job.row.id
        ))),
    }
}

pub fn spawn_pool(state: AppState, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(state.config.workers.max(1)));
        let limits = state.config.concurrency_limits();
        loop {
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => permit.expect("semaphore never closes"),
                _ = shutdown.cancelled() => return,
            };
            match queue::claim(&state.db, &state.jobs.node_id, state.jobs.lease_ms, limits).await {
                Ok(Some(row)) => {
                    tokio::spawn(execute(state.clone(), row, permit));
                }
                Ok(None) => {
                    drop(permit);
                    tokio::select! {
                        _ = state.jobs.wait_for_work() => {}
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
                Err(err) => {
                    drop(permit);
                    tracing::warn!(error = %err, error_detail = ?err, "claiming a job failed");
                    tokio::select! {
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
    })
}

async fn execute(state: AppState, row: JobRow, _slot: OwnedSemaphorePermit) {
    let job_id = row.id;
    let node = state.jobs.node_id.clone();
    let progress = Arc::new(JobProgress::default());
    progress.set_phase("starting");
    if row.cancel_requested != 0 {
        progress.cancel();
    }
    state.jobs.register_running(job_id, progress.clone());
    tracing::info!(job_id, job_type = %row.job_type, attempt = row.attempts, "job started");

    let beating = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat_loop(
        state.clone(),
        job_id,
        progress.clone(),
        beating.clone(),
    ));

    let attempts = row.attempts;
    let job_uuid = row.uuid.clone();
    let result = if attempts > MAX_ATTEMPTS {
        Err(ApiError::Interrupted(format!(
            "the job was interrupted {} times by node restarts and was given up",
            attempts - 1
        )))
    } else {
        let job = Arc::new(RunningJob {
            state: state.clone(),
            row,
            progress: progress.clone(),
        });
        // A panic in the job's code fails the job instead of taking the worker down.
        match tokio::spawn(dispatch(job)).await {
            Ok(result) => result,
            Err(join_error) => Err(ApiError::internal(join_error)),
        }
    };
    beating.cancel();
    let _ = heartbeat.await;
    if result.is_err() {
        discard_staged(&state, &job_uuid).await;
    }

    let (status, error, outcome) = match result {
        Ok(outcome) => (JobStatus::Successful, None, outcome),
        Err(err) if progress.is_cancelled() || matches!(err, ApiError::Cancelled) => (
            JobStatus::Cancelled,
            Some(ApiError::Cancelled),
            JobOutcome::default(),
        ),
        Err(err) => (JobStatus::Failed, Some(err), JobOutcome::default()),
    };
    match &error {
        Some(err) => tracing::info!(job_id, ?status, code = err.code(), error = %err, "job ended"),
        None => tracing::info!(job_id, ?status, "job ended"),
    }
    let end = Finish {
        status,
        error: error.as_ref(),
        item_type: outcome.item_type,
        item_id: outcome.item_id,
        progress: progress.snapshot(),
    };
    match queue::finish(&state.db, job_id, &node, end).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(job_id, "job lease was lost before it ended"),
        Err(err) => tracing::error!(job_id, error = %err, "recording the end of a job failed"),
    }
    state.jobs.unregister_running(job_id);
}

/// A job's staged data never outlives it: whatever ended it (including being given up after
/// repeated interruptions, when its code never ran), a failed job's staging file goes.
async fn discard_staged(state: &AppState, job_uuid: &str) {
    let path = state.storage.staging_path(job_uuid);
    if let Err(err) = tokio::fs::remove_file(&path).await
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(file = %path.display(), error = %err, "could not remove a staged file");
    }
}

async fn heartbeat_loop(
    state: AppState,
    job_id: i64,
    progress: Arc<JobProgress>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let snapshot = progress.snapshot();
        let jobs = &state.jobs;
        match queue::heartbeat(&state.db, job_id, &jobs.node_id, jobs.lease_ms, &snapshot).await {
            Ok(Some(true)) => progress.cancel(),
            Ok(Some(false)) => {}
            Ok(None) => {
                tracing::warn!(job_id, "job lease lost; stopping the job here");
                progress.cancel();
                return;
            }
            Err(err) => tracing::warn!(job_id, error = %err, "job heartbeat failed"),
        }
    }
}
