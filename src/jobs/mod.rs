//! The embedded job system.
//!
//! A job is a row in `jobs`; its state lives only there, so nothing is lost on restart and
//! several nodes on one PostgreSQL database can share the queue. Workers claim a job by
//! taking a lease on it (`queue::claim`), keep the lease alive while they run it, and record
//! the outcome. A node that dies stops renewing its leases and its jobs are taken back; a node
//! that restarts (same node id) takes its own running jobs back at once.

pub mod progress;
pub mod queue;
pub mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::{Notify, watch};

use crate::db::Tx;
use crate::error::ApiResult;
pub use progress::JobProgress;
pub use queue::JobRow;
pub use worker::RunningJob;

/// Job status codes, as the Extility API numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub enum JobStatus {
    Successful = 1,
    InProgress = 2,
    Failed = 3,
    Cancelled = 4,
    NotStarted = 6,
    Waiting = 7,
}

impl JobStatus {
    pub fn code(self) -> i64 {
        self as i64
    }

    pub fn is_finished(code: i64) -> bool {
        code == JobStatus::Successful.code()
            || code == JobStatus::Failed.code()
            || code == JobStatus::Cancelled.code()
    }
}

/// What a new job is about.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub customer_id: i64,
    /// The API operation that queued it (`FetchDisk`, `StartServer`, ...).
    pub job_type: &'static str,
    /// A human-readable description (`Fetch disk "ubuntu"`).
    pub name: String,
    pub item_type: Option<&'static str>,
    pub item_id: Option<i64>,
    /// What the job needs to run. Never credentials: those go to `job_secrets`.
    pub params: Value,
    /// The node that must run it (the one running the server's VM), if any.
    pub target_node: Option<String>,
}

/// What a finished job produced, recorded as its item.
#[derive(Debug, Clone, Default)]
pub struct JobOutcome {
    pub item_type: Option<&'static str>,
    pub item_id: Option<i64>,
}

/// This node's side of the queue: wakes idle workers when a job is queued, lets `CancelJob`
/// reach jobs running here without waiting for a heartbeat, and tells `WaitForJob` callers
/// that some job finished.
pub struct JobQueue {
    pub node_id: String,
    /// How long a claim lasts without a heartbeat: a node that dies loses its jobs after this.
    pub lease_ms: i64,
    wake_workers: Notify,
    running: Mutex<HashMap<i64, Arc<JobProgress>>>,
    finished: watch::Sender<u64>,
    /// Finished jobs never change again, so polling clients are answered from here.
    finished_rows: Mutex<HashMap<i64, JobRow>>,
}

/// How many finished jobs are remembered; the memory is cleared when it is full.
const FINISHED_ROWS_KEPT: usize = 10_000;

impl JobQueue {
    pub fn new(node_id: String, lease_ms: i64) -> Self {
        JobQueue {
            node_id,
            lease_ms,
            wake_workers: Notify::new(),
            running: Mutex::new(HashMap::new()),
            finished: watch::channel(0).0,
            finished_rows: Mutex::new(HashMap::new()),
        }
    }

    /// Queues a job in the caller's transaction, so that it exists exactly when the change
    /// that asked for it is committed. Call [`JobQueue::wake`] after the commit.
    pub async fn enqueue(tx: &mut Tx, job: NewJob) -> ApiResult<i64> {
        queue::insert(tx, job).await
    }

    pub fn wake(&self) {
        self.wake_workers.notify_waiters();
        self.wake_workers.notify_one();
    }

    pub(crate) async fn wait_for_work(&self) {
        self.wake_workers.notified().await
    }

    pub(crate) fn register_running(&self, job_id: i64, progress: Arc<JobProgress>) {
        self.running.lock().unwrap().insert(job_id, progress);
    }

    pub(crate) fn unregister_running(&self, job_id: i64) {
        self.running.lock().unwrap().remove(&job_id);
        self.notify_finished();
    }

    /// Signals a job running on this node to stop. Returns whether it runs here.
    pub fn cancel_local(&self, job_id: i64) -> bool {
        match self.running.lock().unwrap().get(&job_id) {
            Some(progress) => {
                progress.cancel();
                true
            }
            None => false,
        }
    }

    /// A job of the customer, from memory when it has finished, else from the database; a job
    /// running on this node shows its progress as it is now, not as the last heartbeat wrote it.
    pub async fn get(
        &self,
        db: &crate::db::Db,
        job_id: i64,
        customer_id: i64,
    ) -> ApiResult<JobRow> {
        if let Some(row) = self.finished_rows.lock().unwrap().get(&job_id)
            && row.customer_id == customer_id
        {
            return Ok(row.clone());
        }
        let mut row = queue::get(db, job_id, customer_id).await?;
        if JobStatus::is_finished(row.status) {
            let mut kept = self.finished_rows.lock().unwrap();
            if kept.len() >= FINISHED_ROWS_KEPT {
                kept.clear();
            }
            kept.insert(job_id, row.clone());
        } else if let Some(progress) = self.running.lock().unwrap().get(&job_id) {
            row.show_progress(&progress.snapshot());
        }
        Ok(row)
    }

    /// A receiver that changes whenever a job finishes on this node.
    pub fn subscribe_finished(&self) -> watch::Receiver<u64> {
        self.finished.subscribe()
    }

    pub fn notify_finished(&self) {
        self.finished.send_modify(|n| *n = n.wrapping_add(1));
    }
}
