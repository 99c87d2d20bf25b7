//! The SQL of the job queue: insert, claim (with a lease), heartbeat, finish, cancel.

use serde_json::Value;

use super::progress::ProgressSnapshot;
use super::{JobStatus, NewJob};
use crate::db::{Backend, Db, Tx, now_ms};
use crate::error::{ApiError, ApiResult};

/// A row of `jobs`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: i64,
    pub uuid: String,
    pub customer_id: i64,
    pub job_type: String,
    pub name: String,
    pub status: i64,
    pub item_type: Option<String>,
    pub item_id: Option<i64>,
    pub params: String,
    pub phase: Option<String>,
    pub progress: i64,
    pub bytes_done: i64,
    pub bytes_total: Option<i64>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub cancel_requested: i64,
    pub attempts: i64,
    pub created: i64,
    pub started: Option<i64>,
    pub finished: Option<i64>,
}

impl JobRow {
    pub fn params(&self) -> ApiResult<Value> {
        serde_json::from_str(&self.params).map_err(ApiError::internal)
    }

    /// Replaces the progress columns with a running job's progress.
    pub fn show_progress(&mut self, progress: &ProgressSnapshot) {
        self.phase = Some(progress.phase.to_string());
        self.progress = progress.percent;
        self.bytes_done = progress.bytes_done as i64;
        self.bytes_total = progress.bytes_total.map(|t| t as i64);
    }
}

macro_rules! job_columns {
    () => {
        "id, uuid, customer_id, job_type, name, status, item_type, item_id, params, phase, \
         progress, bytes_done, bytes_total, error_code, error_message, cancel_requested, \
         attempts, created, started, finished"
    };
}

pub async fn insert(tx: &mut Tx, job: NewJob) -> ApiResult<i64> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (uuid, customer_id, job_type, name, status, item_type, item_id, params, \
         phase, created, target_node) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9, $10) RETURNING id",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(job.customer_id)
    .bind(job.job_type)
    .bind(job.name)
    .bind(JobStatus::NotStarted.code())
    .bind(job.item_type)
    .bind(job.item_id)
    .bind(job.params.to_string())
    .bind(now_ms())
    .bind(job.target_node)
    .fetch_one(&mut **tx)
    .await?;
    Ok(id)
}

/// Limits on jobs of one type running at once across all nodes; extra jobs wait (status 7).
#[derive(Debug, Clone, Copy)]
pub struct ConcurrencyLimits {
    pub fetch_global: i64,
    pub fetch_per_customer: i64,
}

// A job is claimable when it has not started, is waiting, or its lease ran out (its node
// died). A job aimed at a node (stopping a VM that node runs) waits for that node unless the
// node stopped showing it is alive. Fetches are also held to the concurrency limits.
// PostgreSQL skips rows other nodes are claiming; SQLite runs the statement alone, so it needs
// no row locks.
// $1 node, $2 lease end, $3 now, $4 global fetch limit, $5 per-customer fetch limit,
// $6 how long a node may stay silent and still count as alive.
macro_rules! claim_sql {
    ($row_lock:literal) => {
        concat!(
            "UPDATE jobs SET status = 2, lease_owner = $1, lease_expires = $2, \
             started = COALESCE(started, $3), attempts = attempts + 1, phase = 'starting' \
             WHERE id = (SELECT j.id FROM jobs j \
               WHERE (j.status IN (6, 7) OR (j.status = 2 AND j.lease_expires < $3)) \
               AND (j.target_node IS NULL OR j.target_node = $1 OR NOT EXISTS ( \
                 SELECT 1 FROM nodes n WHERE n.id = j.target_node AND n.last_seen >= $3 - $6)) \
               AND (j.job_type <> 'FetchDisk' OR ( \
                 (SELECT COUNT(*) FROM jobs r WHERE r.job_type = 'FetchDisk' AND r.status = 2 \
                    AND r.lease_expires >= $3) < $4 \
                 AND (SELECT COUNT(*) FROM jobs r WHERE r.job_type = 'FetchDisk' AND r.status = 2 \
                    AND r.lease_expires >= $3 AND r.customer_id = j.customer_id) < $5)) \
               ORDER BY j.id LIMIT 1",
            $row_lock,
            ") RETURNING ",
            job_columns!()
        )
    };
}
const CLAIM_SQLITE: &str = claim_sql!("");
const CLAIM_POSTGRES: &str = claim_sql!(" FOR UPDATE OF j SKIP LOCKED");

/// Records that `node` is alive.
pub async fn node_alive(db: &Db, node: &str) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO nodes (id, last_seen) VALUES ($1, $2) \
         ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen",
    )
    .bind(node)
    .bind(now_ms())
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Claims the oldest runnable job for `node`, or returns `None` when there is nothing to do.
pub async fn claim(
    db: &Db,
    node: &str,
    lease_ms: i64,
    limits: ConcurrencyLimits,
) -> ApiResult<Option<JobRow>> {
    let now = now_ms();
    let sql = match db.backend() {
        Backend::Sqlite => CLAIM_SQLITE,
        Backend::Postgres => CLAIM_POSTGRES,
    };
    let row = sqlx::query_as::<_, JobRow>(sql)
        .bind(node)
        .bind(now + lease_ms)
        .bind(now)
        .bind(limits.fetch_global)
        .bind(limits.fetch_per_customer)
        .bind(lease_ms)
        .fetch_optional(db.pool())
        .await?;
    if row.is_none() {
        mark_waiting(db, now, limits).await?;
    }
    Ok(row)
}

/// Fetches that cannot start because of the limits show as waiting (7) rather than not started.
async fn mark_waiting(db: &Db, now: i64, limits: ConcurrencyLimits) -> ApiResult<()> {
    sqlx::query(
        "UPDATE jobs SET status = 7, phase = 'waiting for a free transfer slot' \
         WHERE status = 6 AND job_type = 'FetchDisk' AND ( \
           (SELECT COUNT(*) FROM jobs r WHERE r.job_type = 'FetchDisk' AND r.status = 2 \
              AND r.lease_expires >= $1) >= $2 \
           OR (SELECT COUNT(*) FROM jobs r WHERE r.job_type = 'FetchDisk' AND r.status = 2 \
              AND r.lease_expires >= $1 AND r.customer_id = jobs.customer_id) >= $3)",
    )
    .bind(now)
    .bind(limits.fetch_global)
    .bind(limits.fetch_per_customer)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// After a restart with the same node id, this node's running jobs are claimable at once
/// instead of after their lease runs out.
pub async fn release_own_leases(db: &Db, node: &str) -> ApiResult<u64> {
    let result =
        sqlx::query("UPDATE jobs SET lease_expires = 0 WHERE status = 2 AND lease_owner = $1")
            .bind(node)
            .execute(db.pool())
            .await?;
    Ok(result.rows_affected())
}

/// Locks a running job's row in the caller's transaction if this node still holds its lease,
/// so that what the job commits there cannot race another node that took the job over (that
/// node's claim waits for the commit, and its attempt then sees what this one made).
pub async fn hold_lease(
    conn: &mut sqlx::AnyConnection,
    job_id: i64,
    node: &str,
) -> ApiResult<bool> {
    let held = sqlx::query(
        "UPDATE jobs SET lease_owner = lease_owner WHERE id = $1 AND lease_owner = $2 \
         AND status = 2",
    )
    .bind(job_id)
    .bind(node)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(held == 1)
}

/// Renews the lease and records progress. Returns `None` when the lease was lost (another node
/// took the job), otherwise whether cancellation was requested.
pub async fn heartbeat(
    db: &Db,
    job_id: i64,
    node: &str,
    lease_ms: i64,
    progress: &ProgressSnapshot,
) -> ApiResult<Option<bool>> {
    let cancel: Option<i64> = sqlx::query_scalar(
        "UPDATE jobs SET lease_expires = $1, bytes_done = $2, bytes_total = $3, progress = $4, \
         phase = $5 WHERE id = $6 AND lease_owner = $7 AND status = 2 RETURNING cancel_requested",
    )
    .bind(now_ms() + lease_ms)
    .bind(progress.bytes_done as i64)
    .bind(progress.bytes_total.map(|t| t as i64))
    .bind(progress.percent)
    .bind(progress.phase)
    .bind(job_id)
    .bind(node)
    .fetch_optional(db.pool())
    .await?;
    Ok(cancel.map(|c| c != 0))
}

/// How a job ended.
pub struct Finish<'a> {
    pub status: JobStatus,
    pub error: Option<&'a ApiError>,
    pub item_type: Option<&'static str>,
    pub item_id: Option<i64>,
    pub progress: ProgressSnapshot,
}

/// Records the end of a job this node holds, and drops any secrets it had.
pub async fn finish(db: &Db, job_id: i64, node: &str, end: Finish<'_>) -> ApiResult<bool> {
    let (code, message) = match end.error {
        Some(err) => (Some(err.code()), Some(err.public_message())),
        None => (None, None),
    };
    let percent = if end.status == JobStatus::Successful {
        100
    } else {
        end.progress.percent
    };
    let phase = match end.status {
        JobStatus::Successful => "done",
        JobStatus::Cancelled => "cancelled",
        _ => "failed",
    };
    let mut tx = db.begin_write().await?;
    let updated = sqlx::query(
        "UPDATE jobs SET status = $1, finished = $2, error_code = $3, error_message = $4, \
         progress = $5, phase = $6, bytes_done = $7, bytes_total = $8, \
         item_type = COALESCE($9, item_type), item_id = COALESCE($10, item_id), \
         lease_owner = NULL, lease_expires = NULL WHERE id = $11 AND lease_owner = $12",
    )
    .bind(end.status.code())
    .bind(now_ms())
    .bind(code)
    .bind(message)
    .bind(percent)
    .bind(phase)
    .bind(end.progress.bytes_done as i64)
    .bind(end.progress.bytes_total.map(|t| t as i64))
    .bind(end.item_type)
    .bind(end.item_id)
    .bind(job_id)
    .bind(node)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("DELETE FROM job_secrets WHERE job_id = $1")
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(updated == 1)
}

/// What a cancellation request found.
#[derive(Debug, PartialEq, Eq)]
pub enum CancelRequest {
    /// It had not started: it is now cancelled.
    CancelledBeforeStart,
    /// It is running: its worker has been asked to stop.
    Requested,
    /// It had already finished.
    AlreadyFinished,
    NotFound,
}

pub async fn request_cancel(db: &Db, job_id: i64, customer_id: i64) -> ApiResult<CancelRequest> {
    let mut tx = db.begin_write().await?;
    let status: Option<i64> =
        sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1 AND customer_id = $2")
            .bind(job_id)
            .bind(customer_id)
            .fetch_optional(&mut *tx)
            .await?;
    let outcome = match status {
        None => CancelRequest::NotFound,
        Some(s) if JobStatus::is_finished(s) => CancelRequest::AlreadyFinished,
        Some(s) if s == JobStatus::InProgress.code() => {
            sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE id = $1")
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
            CancelRequest::Requested
        }
        Some(_) => {
            sqlx::query(
                "UPDATE jobs SET status = 4, cancel_requested = 1, finished = $1, \
                 phase = 'cancelled', error_code = 'CANCELLED', \
                 error_message = 'the job was cancelled' WHERE id = $2",
            )
            .bind(now_ms())
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM job_secrets WHERE job_id = $1")
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
            CancelRequest::CancelledBeforeStart
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

pub async fn get(db: &Db, job_id: i64, customer_id: i64) -> ApiResult<JobRow> {
    sqlx::query_as::<_, JobRow>(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE id = $1 AND customer_id = $2"
    ))
    .bind(job_id)
    .bind(customer_id)
    .fetch_optional(db.pool())
    .await?
    .ok_or(ApiError::not_found("job", job_id))
}

pub async fn list(db: &Db, customer_id: i64) -> ApiResult<Vec<JobRow>> {
    Ok(sqlx::query_as::<_, JobRow>(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE customer_id = $1 ORDER BY id DESC LIMIT 1000"
    ))
    .bind(customer_id)
    .fetch_all(db.pool())
    .await?)
}
