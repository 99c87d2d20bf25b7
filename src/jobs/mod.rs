//! The embedded job system: the only code that writes `jobs`, `job_secrets` and `nodes`.
//!
//! A job is a row in `jobs`; its state lives only there, so nothing is lost on restart and
//! several nodes on one PostgreSQL database can share the queue. A kind of job is a typed
//! thing ([`kind::JobKind`]); the operation layer lists its kinds with [`job_kinds!`] and
//! queues them with [`JobQueue::enqueue`] inside its own transaction. Workers
//! ([`worker::spawn_pool`]) claim a job by taking a lease on it, renew the lease with a
//! heartbeat while they run it, and record the outcome.
//!
//! Every claim adds one to the job's `attempts`, and the attempt number fences what the claim
//! may write: heartbeats, progress, the commit of the job's result and its end all name the
//! attempt, so an attempt whose lease ran out and was taken over (a stalled node, a database
//! pause longer than the lease, a node that claimed its own job again) writes nothing.

pub mod identity;
pub mod kind;
pub mod node_proof;
pub mod queue;
mod secrets;
pub mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::db::{Db, Tx};
use crate::error::ApiResult;
use crate::progress::Progress;
pub use kind::{JobKind, JobOutcome, KindEntry, Lane, Slot};
pub use queue::{CancelRequest, ConcurrencyLimits, JobRow, NodeInfo};
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

    pub const FINISHED: [JobStatus; 3] = [
        JobStatus::Successful,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];
    /// Queued or running.
    pub const UNFINISHED: [JobStatus; 3] = [
        JobStatus::InProgress,
        JobStatus::NotStarted,
        JobStatus::Waiting,
    ];

    pub fn is_finished(code: i64) -> bool {
        JobStatus::FINISHED.iter().any(|s| s.code() == code)
    }

    /// The name shown beside the number (`status_name`): what a person reads.
    pub fn name_of(code: i64) -> &'static str {
        match code {
            1 => "successful",
            2 => "in_progress",
            3 => "failed",
            4 => "cancelled",
            6 => "not_started",
            7 => "waiting",
            _ => "unknown",
        }
    }
}

/// A job to queue: who it is for, what it is about, and its kind's parameters.
#[derive(Debug, Clone)]
pub struct NewJob<K> {
    pub customer_id: i64,
    /// A human-readable description (`Fetch disk "ubuntu"`).
    pub name: String,
    /// What it works on until it has a result of its own.
    pub item_type: Option<&'static str>,
    pub item_id: Option<i64>,
    /// The kind and its parameters. Never credentials: see [`JobQueue::seal_secret`].
    pub params: K,
    /// The node that must run it (the one running the server's VM), if any.
    pub target_node: Option<String>,
    /// Bytes of storage it will make, which count against the customer's quota until its
    /// result is committed (`jobs.reserved_bytes`).
    pub reserved_bytes: i64,
    /// The VDC it will make a disk in, if any (`jobs.vdc_id`).
    pub vdc_id: Option<i64>,
}

impl<K> NewJob<K> {
    /// A job of `customer_id`'s about nothing yet, to run on any node, reserving nothing.
    pub fn new(customer_id: i64, name: String, params: K) -> Self {
        NewJob {
            customer_id,
            name,
            item_type: None,
            item_id: None,
            params,
            target_node: None,
            reserved_bytes: 0,
            vdc_id: None,
        }
    }
}

/// How this node takes part in the queue.
pub struct QueueConfig {
    pub db: Db,
    pub node_id: String,
    /// How long a claim lasts without a heartbeat: a node that dies loses its jobs after this.
    pub lease_ms: i64,
    /// The key sealing job secrets; nodes sharing a database share it.
    pub secret_key: [u8; 32],
    pub limits: ConcurrencyLimits,
    /// The job types this node runs (its `job_kinds!`). It claims no other: a job a newer
    /// node queued, of a kind this node has not got, waits for a node that knows it (a
    /// rolling upgrade: README, "Backups and upgrades").
    pub known_kinds: Vec<&'static str>,
}

/// This node's handle on the queue (cheap to clone). Besides the SQL, it wakes idle workers
/// when a job is queued here, lets `CancelJob` reach jobs running here without waiting for a
/// heartbeat, and tells `WaitForJob` callers that some job finished.
#[derive(Clone)]
pub struct JobQueue(Arc<Shared>);

struct Shared {
    config: QueueConfig,
    /// Proofs of node-to-node requests, with a key of their own and the nonces taken.
    proofs: node_proof::NodeProofs,
    wake_workers: Arc<Notify>,
    running: Mutex<HashMap<i64, Arc<Progress>>>,
    finished: watch::Sender<u64>,
    /// Finished jobs never change again, so polling clients are answered from here.
    finished_rows: Mutex<HashMap<i64, JobRow>>,
}

/// How many finished jobs are remembered; the memory is cleared when it is full.
const FINISHED_ROWS_KEPT: usize = 10_000;

impl JobQueue {
    pub fn new(config: QueueConfig) -> Self {
        JobQueue(Arc::new(Shared {
            proofs: node_proof::NodeProofs::new(&config.secret_key),
            config,
            wake_workers: Arc::new(Notify::new()),
            running: Mutex::new(HashMap::new()),
            finished: watch::channel(0).0,
            finished_rows: Mutex::new(HashMap::new()),
        }))
    }

    pub fn node_id(&self) -> &str {
        &self.0.config.node_id
    }

    pub fn lease_ms(&self) -> i64 {
        self.0.config.lease_ms
    }

    /// A proof for another node that `request` comes from this cluster
    /// ([`node_proof::NodeProofs::make`]).
    pub fn node_proof(&self, request: &node_proof::Request) -> ApiResult<String> {
        self.0.proofs.make(request, crate::db::now_ms())
    }

    /// Whether `request` carries a good proof, not seen before, from a node of this cluster
    /// ([`node_proof::NodeProofs::accept`]).
    pub fn accept_node_proof(&self, request: &node_proof::Request, proof: &str) -> bool {
        self.0.proofs.accept(request, proof, crate::db::now_ms())
    }

    pub(crate) fn db(&self) -> &Db {
        &self.0.config.db
    }

    /// Queues a job in the caller's transaction, so that it exists exactly when the change
    /// that asked for it is committed; the workers are woken when that transaction commits.
    pub async fn enqueue<K: JobKind>(&self, tx: &mut Tx, job: NewJob<K>) -> ApiResult<i64> {
        let id = queue::insert(tx, K::NAME, K::LANE, K::SLOT, job).await?;
        let wake = self.0.wake_workers.clone();
        tx.after_commit(move || {
            wake.notify_waiters();
            wake.notify_one();
        });
        Ok(id)
    }

    /// Keeps a secret the job needs (fetch credentials) out of its record: sealed in
    /// `job_secrets` until the job ends. [`RunningJob::secret`] reads it back.
    pub async fn seal_secret<S: Serialize>(
        &self,
        tx: &mut Tx,
        job_id: i64,
        secret: &S,
    ) -> ApiResult<()> {
        secrets::store(tx, &self.0.config.secret_key, job_id, secret).await
    }

    /// Wakes this node's idle workers (a job became claimable).
    pub(crate) fn wake_workers(&self) {
        self.0.wake_workers.notify_waiters();
    }

    pub(crate) async fn wait_for_work(&self) {
        self.0.wake_workers.notified().await
    }

    /// Claims a job of `lane` this node may run, if any (what a worker does): of the
    /// customers with jobs waiting, the one with the fewest running first, then the oldest job.
    pub async fn claim(&self, lane: Lane) -> ApiResult<Option<JobRow>> {
        let c = &self.0.config;
        let known_kinds = c.known_kinds.join(",");
        queue::claim(&c.db, &c.node_id, c.lease_ms, c.limits, lane, &known_kinds).await
    }

    fn register_running(&self, job_id: i64, progress: Arc<Progress>) {
        self.0.running.lock().unwrap().insert(job_id, progress);
    }

    fn unregister_running(&self, job_id: i64, progress: &Arc<Progress>) {
        let mut running = self.0.running.lock().unwrap();
        // An attempt that lost its lease may end after this node claimed the job again.
        if running
            .get(&job_id)
            .is_some_and(|p| Arc::ptr_eq(p, progress))
        {
            running.remove(&job_id);
        }
        drop(running);
        self.notify_finished();
    }

    /// Cancels a job of the customer: one that has not started is cancelled at once; a
    /// running one is asked to stop (here at once, on another node at its next heartbeat).
    pub async fn cancel(&self, job_id: i64, customer_id: i64) -> ApiResult<CancelRequest> {
        let tx = self.db().begin_write().await?;
        self.cancel_in(tx, job_id, customer_id).await
    }

    /// [`Jobs::cancel`] in a write transaction the caller began (and this commits): the
    /// operation's own, which carries its audit row.
    pub async fn cancel_in(
        &self,
        tx: Tx,
        job_id: i64,
        customer_id: i64,
    ) -> ApiResult<CancelRequest> {
        let outcome = queue::request_cancel(tx, job_id, customer_id).await?;
        match outcome {
            CancelRequest::Requested => {
                if let Some(progress) = self.0.running.lock().unwrap().get(&job_id) {
                    progress.cancel();
                }
            }
            CancelRequest::CancelledBeforeStart => self.notify_finished(),
            CancelRequest::AlreadyFinished | CancelRequest::NotFound => {}
        }
        Ok(outcome)
    }

    /// A job of the customer, from memory when it has finished, else from the database; a job
    /// running on this node shows its progress as it is now, not as the last heartbeat wrote it.
    pub async fn get(&self, job_id: i64, customer_id: i64) -> ApiResult<JobRow> {
        if let Some(row) = self.0.finished_rows.lock().unwrap().get(&job_id)
            && row.customer_id == customer_id
        {
            return Ok(row.clone());
        }
        let mut row = queue::get(self.db(), job_id, customer_id).await?;
        if JobStatus::is_finished(row.status) {
            let mut kept = self.0.finished_rows.lock().unwrap();
            if kept.len() >= FINISHED_ROWS_KEPT {
                kept.clear();
            }
            kept.insert(job_id, row.clone());
        } else if let Some(progress) = self.0.running.lock().unwrap().get(&job_id) {
            row.show_progress(&progress.snapshot());
        }
        Ok(row)
    }

    /// A page of the customer's jobs, newest first.
    pub async fn list(
        &self,
        customer_id: i64,
        filter: &queue::ListFilter<'_>,
    ) -> ApiResult<Vec<JobRow>> {
        queue::list(self.db(), customer_id, filter).await
    }

    /// A receiver that changes whenever a job finishes on this node.
    pub fn subscribe_finished(&self) -> watch::Receiver<u64> {
        self.0.finished.subscribe()
    }

    fn notify_finished(&self) {
        self.0.finished.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Records what this node offers, and that it is alive, as it starts.
    pub async fn introduce(&self, info: &NodeInfo) -> ApiResult<()> {
        queue::node_started(self.db(), self.node_id(), info).await
    }

    /// Records that this node is alive: jobs aimed at it wait for it only while it does.
    pub async fn show_alive(&self) -> ApiResult<()> {
        queue::node_alive(self.db(), self.node_id()).await
    }

    /// After a restart with the same node id: this node's running jobs become claimable at
    /// once instead of after their lease runs out. Returns how many there were.
    pub async fn take_back_own_jobs(&self) -> ApiResult<u64> {
        queue::release_own_leases(self.db(), self.node_id()).await
    }

    /// The staging names of the attempts running on other nodes: at startup, the only
    /// staged data that may still be in use (this node's own attempts died with it, even if
    /// their jobs run again).
    pub async fn staging_names_in_use(&self) -> ApiResult<Vec<String>> {
        let running = queue::running_elsewhere(self.db(), self.node_id()).await?;
        Ok(running
            .iter()
            .map(|(uuid, attempt)| worker::staging_name(uuid, *attempt))
            .collect())
    }
}
