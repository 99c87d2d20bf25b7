//! The worker pool: claims jobs up to a concurrency bound and runs each with a heartbeat that
//! keeps its lease, publishes its progress and picks up cancellation requests.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::kind::{self, JobOutcome, KindEntry, Lane};
use super::queue::{self, Finish, JobRow, Lease};
use super::{JobQueue, JobStatus, secrets};
use crate::db::Tx;
use crate::error::{ApiError, ApiResult};
use crate::metrics::METRICS;
use crate::progress::Progress;

/// How often a running job's progress is written and its lease renewed.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// How often an idle node looks for work queued by other nodes (local work wakes it at once).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// A job interrupted this many times (its node died while running it) fails instead of
/// running again.
pub const MAX_ATTEMPTS: i64 = 3;

/// One attempt at a job, as its kind's code gets it.
pub struct RunningJob<C> {
    /// What the job's code works with (the application state).
    pub state: C,
    pub row: JobRow,
    pub progress: Arc<Progress>,
    queue: JobQueue,
    lease: Lease,
}

impl<C> RunningJob<C> {
    /// An attempt at a job `queue` has just claimed (the row [`JobQueue::claim`] returned).
    pub fn new(state: C, row: JobRow, queue: JobQueue) -> Self {
        let lease = Lease {
            job_id: row.id,
            node: queue.node_id().to_string(),
            attempt: row.attempts,
        };
        let progress = Arc::new(Progress::default());
        if row.cancel_requested != 0 {
            progress.cancel();
        }
        RunningJob {
            state,
            row,
            progress,
            queue,
            lease,
        }
    }

    /// Whether an earlier attempt at this job was interrupted (its node died or restarted).
    pub fn is_retry(&self) -> bool {
        self.row.attempts > 1
    }

    /// A name unique to this attempt, for the data it stages ([`staging_name`]): two attempts
    /// of one job never write the same file.
    pub fn staging_name(&self) -> String {
        staging_name(&self.row.uuid, self.row.attempts)
    }

    /// Fails with [`ApiError::Cancelled`] once cancellation was requested.
    pub fn check_cancelled(&self) -> ApiResult<()> {
        if self.progress.is_cancelled() {
            Err(ApiError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// The secret the operation sealed for the job ([`JobQueue::seal_secret`]), if any.
    pub async fn secret<S: DeserializeOwned>(&self) -> ApiResult<Option<S>> {
        let key = &self.queue.0.config.secret_key;
        secrets::load(self.queue.db(), key, self.row.id).await
    }

    /// Begins a transaction that can commit only while this attempt holds the job: it fails
    /// with INTERRUPTED when another attempt has taken the job over, and holds the job's row
    /// until it ends, so no other attempt can take it over meanwhile. Everything a job makes
    /// visible (its result, the usage it records) is written in such a transaction.
    pub async fn begin_fenced(&self) -> ApiResult<Tx> {
        let mut tx = self.queue.db().begin_write().await?;
        if !queue::hold(&mut tx, &self.lease).await? {
            return Err(ApiError::Interrupted(format!(
                "attempt {} of job {} lost its lease to another attempt; it saved nothing",
                self.lease.attempt, self.row.id
            )));
        }
        Ok(tx)
    }

    /// Records `outcome` as the job's result in a [`Self::begin_fenced`] transaction and
    /// commits it: from then on the job has succeeded with it, even if this node dies before
    /// the job's end is written (the next attempt reports it instead of running again).
    pub async fn commit(&self, mut tx: Tx, outcome: JobOutcome) -> ApiResult<JobOutcome> {
        queue::record_result(&mut tx, self.row.id, outcome.item_type, outcome.item_id).await?;
        tx.commit().await?;
        Ok(outcome)
    }
}

/// The staging name of attempt `attempt` of the job `uuid`: the uuid for the first attempt,
/// `<uuid>-<attempt>` for the attempts after it.
pub fn staging_name(job_uuid: &str, attempt: i64) -> String {
    if attempt <= 1 {
        job_uuid.to_string()
    } else {
        format!("{job_uuid}-{attempt}")
    }
}

/// What a failed attempt leaves to discard.
#[derive(Debug, Clone)]
pub enum Staged {
    /// What this attempt staged: the file of this staging name.
    Attempt(String),
    /// What any attempt of the job staged (a job given up before this attempt ran): the files
    /// named by the job's uuid.
    AllOf(String),
}

impl Staged {
    /// Whether the staged file of this name (without its extension) is to be discarded.
    pub fn covers(&self, name: &str) -> bool {
        match self {
            Staged::Attempt(attempt) => name == attempt,
            Staged::AllOf(uuid) => name
                .strip_prefix(uuid.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('-')),
        }
    }
}

/// What the pool runs jobs with.
pub struct Pool<C: 'static> {
    pub queue: JobQueue,
    /// What each job's code gets as [`RunningJob::state`].
    pub state: C,
    pub kinds: &'static [KindEntry<C>],
    /// Jobs of each lane run at once on this node.
    pub workers: fn(&C, Lane) -> usize,
    /// Called after every attempt that did not succeed: removes what it staged.
    pub discard_staged: fn(&C, Staged) -> BoxFuture<'static, ()>,
}

/// Starts the workers of every lane; they stop taking jobs when `shutdown` fires.
pub fn spawn_pool<C: Clone + Send + Sync + 'static>(
    pool: Pool<C>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let pool = Arc::new(pool);
    let lanes: Vec<_> = Lane::ALL
        .into_iter()
        .map(|lane| tokio::spawn(run_lane(pool.clone(), lane, shutdown.clone())))
        .collect();
    tokio::spawn(async move {
        for lane in lanes {
            let _ = lane.await;
        }
    })
}

/// Claims jobs of one lane while it has a free worker.
async fn run_lane<C: Clone + Send + Sync + 'static>(
    pool: Arc<Pool<C>>,
    lane: Lane,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new((pool.workers)(&pool.state, lane).max(1)));
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("semaphore never closes"),
            _ = shutdown.cancelled() => return,
        };
        match pool.queue.claim(lane).await {
            Ok(Some(row)) => {
                tokio::spawn(execute(pool.clone(), row, permit));
            }
            Ok(None) => {
                drop(permit);
                tokio::select! {
                    _ = pool.queue.wait_for_work() => {}
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
}

/// What the attempt amounts to before its kind's code runs, if anything.
fn settled_before_running(row: &JobRow) -> Option<ApiResult<JobOutcome>> {
    if row.result_committed != 0 {
        // An earlier attempt committed the result and died before recording the job's end;
        // the item it recorded stays the job's item.
        return Some(Ok(JobOutcome::default()));
    }
    if row.attempts > MAX_ATTEMPTS {
        return Some(Err(ApiError::Interrupted(format!(
            "the job was interrupted {} times by node restarts and was given up",
            row.attempts - 1
        ))));
    }
    None
}

async fn execute<C: Clone + Send + Sync + 'static>(
    pool: Arc<Pool<C>>,
    row: JobRow,
    _slot: OwnedSemaphorePermit,
) {
    let job = Arc::new(RunningJob::new(pool.state.clone(), row, pool.queue.clone()));
    let (job_id, attempt) = (job.row.id, job.row.attempts);
    let progress = job.progress.clone();
    progress.set_phase("starting");
    pool.queue.register_running(job_id, progress.clone());
    tracing::info!(job_id, job_type = %job.row.job_type, attempt, "job started");
    let started = std::time::Instant::now();
    if attempt == 1 {
        let waited_ms = (crate::db::now_ms() - job.row.created).max(0);
        METRICS
            .job_wait_seconds
            .with_label_values(&[job.row.job_type.as_str()])
            .observe(waited_ms as f64 / 1000.0);
    }

    let beating = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat_loop(
        pool.queue.clone(),
        job.lease.clone(),
        progress.clone(),
        beating.clone(),
    ));

    let given_up = job.row.attempts > MAX_ATTEMPTS;
    let result = match settled_before_running(&job.row) {
        Some(result) => result,
        None => match kind::find(pool.kinds, &job.row.job_type) {
            None => Err(ApiError::internal(anyhow::anyhow!(
                "job {job_id} has unknown type {}",
                job.row.job_type
            ))),
            // A panic in the job's code fails the job instead of taking the worker down.
            Some(kind) => match tokio::spawn((kind.run)(job.clone())).await {
                Ok(result) => result,
                Err(join_error) => Err(ApiError::internal(join_error)),
            },
        },
    };
    beating.cancel();
    let _ = heartbeat.await;
    if let Err(err) = &result
        && err.is_database_unavailable()
        && !progress.is_cancelled()
    {
        abandon(&pool, &job, err).await;
        pool.queue.unregister_running(job_id, &progress);
        return;
    }
    if result.is_err() {
        // A job given up never ran this attempt: what its earlier attempts staged goes.
        let staged = if given_up {
            Staged::AllOf(job.row.uuid.clone())
        } else {
            Staged::Attempt(job.staging_name())
        };
        (pool.discard_staged)(&pool.state, staged).await;
    }

    if let Err(err) = &result
        && let Some(kind) = kind::find(pool.kinds, &job.row.job_type)
    {
        (kind.ended_unsuccessfully)(job.clone(), err.to_string()).await;
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
    let ended = match status {
        JobStatus::Successful => "succeeded",
        JobStatus::Cancelled => "cancelled",
        _ => "failed",
    };
    METRICS
        .job_run_seconds
        .with_label_values(&[job.row.job_type.as_str(), ended])
        .observe(started.elapsed().as_secs_f64());
    let end = Finish {
        status,
        error: error.as_ref(),
        outcome,
        progress: progress.snapshot(),
    };
    match finish_retrying(&pool.queue, &job.lease, end).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            job_id,
            attempt,
            "the job's lease was taken over before this attempt ended; another attempt owns it"
        ),
        Err(err) => tracing::error!(job_id, error = %err, "recording the end of a job failed"),
    }
    pool.queue.unregister_running(job_id, &progress);
}

/// Gives up an attempt that lost the database (a restart, a failover): what it did is as
/// unknown as if this node had died, so the job is left to the path that resumes a dead node's
/// jobs instead of failing. Its staged data goes; its lease is released as soon as the
/// database answers (or runs out), and the next attempt, here or elsewhere, resumes the job:
/// the kinds resume after a crash, and a result this attempt committed is reported, not made
/// again.
async fn abandon<C: Clone + Send + Sync + 'static>(
    pool: &Pool<C>,
    job: &RunningJob<C>,
    err: &ApiError,
) {
    tracing::warn!(job_id = job.lease.job_id, attempt = job.lease.attempt, error = ?err,
        "the database went away under the job; it will be resumed by another attempt");
    (pool.discard_staged)(&pool.state, Staged::Attempt(job.staging_name())).await;
    let deadline = tokio::time::Instant::now() + lease_duration(&pool.queue);
    loop {
        match queue::release_lease(pool.queue.db(), &job.lease).await {
            Ok(_) => {
                pool.queue.wake_workers();
                return;
            }
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(DATABASE_RETRY).await;
            }
            // The lease runs out by itself.
            Err(_) => return,
        }
    }
}

/// How often an attempt that lost the database tries it again (to release or end the job).
const DATABASE_RETRY: Duration = Duration::from_millis(250);

fn lease_duration(queue: &JobQueue) -> Duration {
    Duration::from_millis(queue.lease_ms().max(0) as u64)
}

/// Records the job's end, trying again while the database is out of reach and the lease
/// could still hold (the heartbeat has stopped, so after that another attempt owns the job,
/// and `finish`, fenced by the attempt, changes nothing).
async fn finish_retrying(queue: &JobQueue, lease: &Lease, end: Finish<'_>) -> ApiResult<bool> {
    let deadline = tokio::time::Instant::now() + lease_duration(queue);
    loop {
        match queue::finish(queue.db(), lease, &end).await {
            Err(err) if err.is_database_unavailable() && tokio::time::Instant::now() < deadline => {
                tracing::warn!(job_id = lease.job_id, error = %err,
                    "recording the end of a job failed; trying again");
                tokio::time::sleep(DATABASE_RETRY).await;
            }
            done => return done,
        }
    }
}

async fn heartbeat_loop(
    queue: JobQueue,
    lease: Lease,
    progress: Arc<Progress>,
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
        match queue::heartbeat(queue.db(), &lease, queue.lease_ms(), &snapshot).await {
            Ok(Some(true)) => progress.cancel(),
            Ok(Some(false)) => {}
            Ok(None) => {
                tracing::warn!(
                    job_id = lease.job_id,
                    attempt = lease.attempt,
                    "job lease lost to another attempt; stopping this one"
                );
                progress.cancel();
                return;
            }
            Err(err) => tracing::warn!(job_id = lease.job_id, error = %err, "job heartbeat failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_data_is_discarded_per_attempt_or_for_the_whole_job() {
        assert_eq!(staging_name("u", 1), "u");
        assert_eq!(staging_name("u", 3), "u-3");
        let first = Staged::Attempt(staging_name("u", 1));
        assert!(first.covers("u") && !first.covers("u-2"));
        let third = Staged::Attempt(staging_name("u", 3));
        assert!(third.covers("u-3") && !third.covers("u") && !third.covers("u-30"));
        let all = Staged::AllOf("u".into());
        assert!(all.covers("u") && all.covers("u-2") && !all.covers("uv") && !all.covers("v"));
    }
}
