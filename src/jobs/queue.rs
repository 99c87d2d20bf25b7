//! The SQL of the job queue: insert, claim (with a lease), heartbeat, finish, cancel. Job
//! statuses are bound as parameters from [`JobStatus`], never written as numbers.

use super::kind::{Lane, Slot, TRANSFER_SLOT};
use super::{JobStatus, NewJob};
use crate::db::{Backend, Db, Tx, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::progress::ProgressSnapshot;

/// A row of `jobs`.
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct JobRow {
    pub id: i64,
    pub uuid: String,
    pub customer_id: i64,
    pub job_type: String,
    pub name: String,
    pub status: i64,
    pub item_type: Option<String>,
    pub item_id: Option<i64>,
    /// The kind's parameters as JSON.
    pub params: String,
    pub phase: Option<String>,
    pub progress: i64,
    pub bytes_done: i64,
    pub bytes_total: Option<i64>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub cancel_requested: i64,
    /// Claims so far; the claim's number is the attempt that fences its writes.
    pub attempts: i64,
    /// 1 once an attempt has committed the job's result (its item).
    pub result_committed: i64,
    pub created: i64,
    pub started: Option<i64>,
    pub finished: Option<i64>,
}

impl JobRow {
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
         attempts, result_committed, created, started, finished"
    };
}

pub(super) async fn insert<K: serde::Serialize>(
    tx: &mut Tx,
    job_type: &'static str,
    lane: Lane,
    slot: Slot,
    job: NewJob<K>,
) -> ApiResult<i64> {
    let params = serde_json::to_string(&job.params).map_err(ApiError::internal)?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (uuid, customer_id, job_type, name, status, item_type, item_id, params, \
         phase, created, target_node, slot, lane, reserved_bytes, vdc_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9, $10, $11, $12, $13, $14) \
         RETURNING id",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(job.customer_id)
    .bind(job_type)
    .bind(job.name)
    .bind(JobStatus::NotStarted.code())
    .bind(job.item_type)
    .bind(job.item_id)
    .bind(params)
    .bind(now_ms())
    .bind(job.target_node)
    .bind(slot.column())
    .bind(lane.column())
    .bind(job.reserved_bytes)
    .bind(job.vdc_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(id)
}

/// Limits on transfer jobs ([`Slot::Transfer`]) running at once across all nodes; extra jobs
/// wait (status 7).
#[derive(Debug, Clone, Copy)]
pub struct ConcurrencyLimits {
    pub transfers: i64,
    pub transfers_per_customer: i64,
}

// Whether transfers running with a live lease, all of them and those of job `j`'s customer,
// are below the limits. Arguments: the placeholders of now, the global and the per-customer
// limit, the in-progress status and the transfer slot.
macro_rules! transfers_below_limits {
    ($now:literal, $global:literal, $per_customer:literal, $running:literal, $slot:literal) => {
        concat!(
            "(SELECT COUNT(*) FROM jobs r WHERE r.slot = ",
            $slot,
            " AND r.status = ",
            $running,
            " AND r.lease_expires >= ",
            $now,
            ") < ",
            $global,
            " AND (SELECT COUNT(*) FROM jobs r WHERE r.slot = ",
            $slot,
            " AND r.status = ",
            $running,
            " AND r.lease_expires >= ",
            $now,
            " AND r.customer_id = j.customer_id) < ",
            $per_customer
        )
    };
}

// A job is claimable when it has not started, is waiting, or its lease ran out (its node
// died). A job aimed at a node (stopping a VM that node runs) waits for that node unless the
// node stopped showing it is alive. Transfers are also held to the concurrency limits. Of
// the claimable jobs, those of the customer with the fewest jobs running go first, then those
// of the customer whose last job started longest ago (round robin), then the oldest: one
// customer's backlog never makes another's jobs wait behind all of it.
// PostgreSQL skips rows other nodes (or a CancelJob) hold locked, and rechecks the conditions
// on a row that changed while it waited; SQLite runs the statement alone.
// $1 node, $2 lease end, $3 now, $4/$5 limits, $6 how long a node may stay silent and still
// count as alive, $7 in progress, $8 not started, $9 waiting, $10 the transfer slot, $11 the
// lane, $12 the job types this node knows, separated by commas (kinds' names are words: no
// comma, `%` or `_` in them; a unit test checks).
macro_rules! claim_sql {
    ($row_lock:literal) => {
        concat!(
            "UPDATE jobs SET status = $7, lease_owner = $1, lease_expires = $2, \
             started = COALESCE(started, $3), attempts = attempts + 1, phase = 'starting' \
             WHERE id = (SELECT j.id FROM jobs j \
               WHERE (j.status IN ($8, $9) OR (j.status = $7 AND j.lease_expires < $3)) \
               AND j.lane = $11 \
               AND (',' || $12 || ',') LIKE ('%,' || j.job_type || ',%') \
               AND (j.target_node IS NULL OR j.target_node = $1 OR NOT EXISTS ( \
                 SELECT 1 FROM nodes n WHERE n.id = j.target_node AND n.last_seen >= $3 - $6)) \
               AND (j.slot IS NULL OR j.slot <> $10 OR (",
            transfers_below_limits!("$3", "$4", "$5", "$7", "$10"),
            ")) ORDER BY (SELECT COUNT(*) FROM jobs r WHERE r.customer_id = j.customer_id \
               AND r.status = $7 AND r.lease_expires >= $3), \
               (SELECT COALESCE(MAX(r.started), 0) FROM jobs r \
                WHERE r.customer_id = j.customer_id), j.id LIMIT 1",
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
    .execute(db.lease_pool())
    .await?;
    Ok(())
}

/// What a node offers, recorded when it starts.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Where its API listens.
    pub address: String,
    pub vcpus: i64,
    pub memory_mb: i64,
    /// Whether it runs VMs (its hypervisor is not `none`).
    pub can_run_vms: bool,
    pub version: String,
    /// Its address between nodes, for VXLAN (`--tunnel-address`).
    pub tunnel_address: Option<String>,
    /// This start's random id (`identity::NodeLock`).
    pub instance: String,
}

/// Records what `node` offers, and that it is alive, as it starts.
pub async fn node_started(db: &Db, node: &str, info: &NodeInfo) -> ApiResult<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO nodes (id, last_seen, address, vcpus, memory_mb, can_run_vms, version, \
         started, tunnel_address, instance) VALUES ($1, $2, $3, $4, $5, $6, $7, $2, $8, $9) \
         ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen, \
         address = excluded.address, vcpus = excluded.vcpus, memory_mb = excluded.memory_mb, \
         can_run_vms = excluded.can_run_vms, version = excluded.version, \
         started = excluded.started, tunnel_address = excluded.tunnel_address, \
         instance = excluded.instance",
    )
    .bind(node)
    .bind(now)
    .bind(&info.address)
    .bind(info.vcpus)
    .bind(info.memory_mb)
    .bind(i64::from(info.can_run_vms))
    .bind(&info.version)
    .bind(&info.tunnel_address)
    .bind(&info.instance)
    .execute(db.lease_pool())
    .await?;
    Ok(())
}

/// Claims a runnable job of `lane` for `node` (the customer with the fewest jobs running first,
/// then the oldest job), or returns `None` when there is nothing to do.
pub async fn claim(
    db: &Db,
    node: &str,
    lease_ms: i64,
    limits: ConcurrencyLimits,
    lane: Lane,
    known_kinds: &str,
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
        .bind(limits.transfers)
        .bind(limits.transfers_per_customer)
        .bind(lease_ms.max(0))
        .bind(JobStatus::InProgress.code())
        .bind(JobStatus::NotStarted.code())
        .bind(JobStatus::Waiting.code())
        .bind(TRANSFER_SLOT)
        .bind(lane.column())
        .bind(known_kinds)
        .fetch_optional(db.lease_pool())
        .await?;
    if row.is_none() {
        mark_waiting(db, now, limits).await?;
    }
    Ok(row)
}

/// Transfers that cannot start because of the limits show as waiting (7) rather than not
/// started.
async fn mark_waiting(db: &Db, now: i64, limits: ConcurrencyLimits) -> ApiResult<()> {
    sqlx::query(concat!(
        "UPDATE jobs SET status = $6, phase = 'waiting for a free transfer slot' \
         WHERE id IN (SELECT j.id FROM jobs j WHERE j.status = $5 AND j.slot = $7 AND NOT (",
        transfers_below_limits!("$1", "$2", "$3", "$4", "$7"),
        "))"
    ))
    .bind(now)
    .bind(limits.transfers)
    .bind(limits.transfers_per_customer)
    .bind(JobStatus::InProgress.code())
    .bind(JobStatus::NotStarted.code())
    .bind(JobStatus::Waiting.code())
    .bind(TRANSFER_SLOT)
    .execute(db.lease_pool())
    .await?;
    Ok(())
}

/// After a restart with the same node id, this node's running jobs are claimable at once
/// instead of after their lease runs out.
pub async fn release_own_leases(db: &Db, node: &str) -> ApiResult<u64> {
    let result =
        sqlx::query("UPDATE jobs SET lease_expires = 0 WHERE status = $1 AND lease_owner = $2")
            .bind(JobStatus::InProgress.code())
            .bind(node)
            .execute(db.lease_pool())
            .await?;
    Ok(result.rows_affected())
}

/// Makes a job `lease` holds claimable at once (its attempt gave up without ending it).
/// Returns false when the lease no longer holds it.
pub async fn release_lease(db: &Db, lease: &Lease) -> ApiResult<bool> {
    let result = sqlx::query(
        "UPDATE jobs SET lease_expires = 0 WHERE id = $1 AND lease_owner = $2 AND attempts = $3 \
         AND status = $4",
    )
    .bind(lease.job_id)
    .bind(&lease.node)
    .bind(lease.attempt)
    .bind(JobStatus::InProgress.code())
    .execute(db.lease_pool())
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The uuid and attempt of every job running on a node other than `node`.
pub async fn running_elsewhere(db: &Db, node: &str) -> ApiResult<Vec<(String, i64)>> {
    Ok(
        sqlx::query_as("SELECT uuid, attempts FROM jobs WHERE status = $1 AND lease_owner <> $2")
            .bind(JobStatus::InProgress.code())
            .bind(node)
            .fetch_all(db.lease_pool())
            .await?,
    )
}

/// One attempt at a job: the claim that may write to it. Every write of a running job names
/// its attempt, so an attempt whose lease was taken over writes nothing.
#[derive(Debug, Clone)]
pub struct Lease {
    pub job_id: i64,
    pub node: String,
    pub attempt: i64,
}

/// Locks a running job's row in the caller's transaction if `lease` still holds it, so that
/// what the job commits there cannot race another attempt (on PostgreSQL another node's claim
/// skips the locked row until the commit, and its attempt then sees what this one made; on
/// SQLite the write transaction runs alone).
pub async fn hold(conn: &mut sqlx::AnyConnection, lease: &Lease) -> ApiResult<bool> {
    let held = sqlx::query(
        "UPDATE jobs SET lease_owner = lease_owner WHERE id = $1 AND lease_owner = $2 \
         AND attempts = $3 AND status = $4",
    )
    .bind(lease.job_id)
    .bind(&lease.node)
    .bind(lease.attempt)
    .bind(JobStatus::InProgress.code())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(held == 1)
}

/// Records the job's result (its item) in the transaction that made it.
pub async fn record_result(
    conn: &mut sqlx::AnyConnection,
    job_id: i64,
    item_type: Option<&'static str>,
    item_id: Option<i64>,
) -> ApiResult<()> {
    sqlx::query(
        "UPDATE jobs SET result_committed = 1, item_type = COALESCE($1, item_type), \
         item_id = COALESCE($2, item_id) WHERE id = $3",
    )
    .bind(item_type)
    .bind(item_id)
    .bind(job_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Renews the lease and records progress. Returns `None` when the lease was lost (another
/// attempt took the job), otherwise whether cancellation was requested.
pub async fn heartbeat(
    db: &Db,
    lease: &Lease,
    lease_ms: i64,
    progress: &ProgressSnapshot,
) -> ApiResult<Option<bool>> {
    let cancel: Option<i64> = sqlx::query_scalar(
        "UPDATE jobs SET lease_expires = $1, bytes_done = $2, bytes_total = $3, progress = $4, \
         phase = $5 WHERE id = $6 AND lease_owner = $7 AND attempts = $8 AND status = $9 \
         RETURNING cancel_requested",
    )
    .bind(now_ms() + lease_ms)
    .bind(progress.bytes_done as i64)
    .bind(progress.bytes_total.map(|t| t as i64))
    .bind(progress.percent)
    .bind(progress.phase)
    .bind(lease.job_id)
    .bind(&lease.node)
    .bind(lease.attempt)
    .bind(JobStatus::InProgress.code())
    .fetch_optional(db.lease_pool())
    .await?;
    Ok(cancel.map(|c| c != 0))
}

/// How a job ended.
pub struct Finish<'a> {
    pub status: JobStatus,
    pub error: Option<&'a ApiError>,
    pub outcome: super::JobOutcome,
    pub progress: ProgressSnapshot,
}

/// Records the end of a job `lease` holds, and drops any secrets it had. Returns false when
/// the lease was lost (another attempt owns the job, and its end).
pub async fn finish(db: &Db, lease: &Lease, end: &Finish<'_>) -> ApiResult<bool> {
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
    let mut tx = db.begin_lease_write().await?;
    let updated = sqlx::query(
        "UPDATE jobs SET status = $1, finished = $2, error_code = $3, error_message = $4, \
         progress = $5, phase = $6, bytes_done = $7, bytes_total = $8, \
         item_type = COALESCE($9, item_type), item_id = COALESCE($10, item_id), \
         lease_owner = NULL, lease_expires = NULL \
         WHERE id = $11 AND lease_owner = $12 AND attempts = $13 AND status = $14",
    )
    .bind(end.status.code())
    .bind(now_ms())
    .bind(code)
    .bind(message)
    .bind(percent)
    .bind(phase)
    .bind(end.progress.bytes_done as i64)
    .bind(end.progress.bytes_total.map(|t| t as i64))
    .bind(end.outcome.item_type)
    .bind(end.outcome.item_id)
    .bind(lease.job_id)
    .bind(&lease.node)
    .bind(lease.attempt)
    .bind(JobStatus::InProgress.code())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 1 {
        delete_secrets(&mut tx, lease.job_id).await?;
    }
    tx.commit().await?;
    Ok(updated == 1)
}

async fn delete_secrets(tx: &mut Tx, job_id: i64) -> ApiResult<()> {
    sqlx::query("DELETE FROM job_secrets WHERE job_id = $1")
        .bind(job_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// What a cancellation request found.
#[derive(Debug, PartialEq, Eq)]
pub enum CancelRequest {
    /// It had not started: it is now cancelled, and will never run.
    CancelledBeforeStart,
    /// It is running: its worker has been asked to stop.
    Requested,
    /// It had already finished.
    AlreadyFinished,
    NotFound,
}

/// Cancels a job that has not started, or asks a running one to stop. Each is one conditional
/// UPDATE, so a claim at the same instant either comes first (the job runs and is asked to
/// stop) or finds the job cancelled; a claimed job is never marked cancelled while it runs.
/// Both are made in `tx`, which this commits (with whatever else it carries).
pub async fn request_cancel(mut tx: Tx, job_id: i64, customer_id: i64) -> ApiResult<CancelRequest> {
    let cancelled = sqlx::query(
        "UPDATE jobs SET status = $1, cancel_requested = 1, finished = $2, \
         phase = 'cancelled', error_code = $3, error_message = $4 \
         WHERE id = $5 AND customer_id = $6 AND status IN ($7, $8)",
    )
    .bind(JobStatus::Cancelled.code())
    .bind(now_ms())
    .bind(ApiError::Cancelled.code())
    .bind(ApiError::Cancelled.to_string())
    .bind(job_id)
    .bind(customer_id)
    .bind(JobStatus::NotStarted.code())
    .bind(JobStatus::Waiting.code())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let outcome = if cancelled == 1 {
        delete_secrets(&mut tx, job_id).await?;
        CancelRequest::CancelledBeforeStart
    } else {
        let asked = sqlx::query(
            "UPDATE jobs SET cancel_requested = 1 \
             WHERE id = $1 AND customer_id = $2 AND status = $3",
        )
        .bind(job_id)
        .bind(customer_id)
        .bind(JobStatus::InProgress.code())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if asked == 1 {
            CancelRequest::Requested
        } else {
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT id FROM jobs WHERE id = $1 AND customer_id = $2")
                    .bind(job_id)
                    .bind(customer_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            match exists {
                Some(_) => CancelRequest::AlreadyFinished,
                None => CancelRequest::NotFound,
            }
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

/// Which of a customer's jobs to list: at most `limit` with an id below `before_id`, newest
/// first, of a status and of a type if given.
#[derive(Debug, Clone, Default)]
pub struct ListFilter<'a> {
    pub before_id: i64,
    pub limit: i64,
    pub status: Option<i64>,
    pub job_type: Option<&'a str>,
}

/// `jobs`' columns as the members of a JSON object (`json_object(...)`'s arguments), named as
/// [`JobRow`]'s fields.
macro_rules! job_json_members {
    () => {
        "'id', id, 'uuid', uuid, 'customer_id', customer_id, 'job_type', job_type, \
         'name', name, 'status', status, 'item_type', item_type, 'item_id', item_id, \
         'params', params, 'phase', phase, 'progress', progress, 'bytes_done', bytes_done, \
         'bytes_total', bytes_total, 'error_code', error_code, 'error_message', error_message, \
         'cancel_requested', cancel_requested, 'attempts', attempts, \
         'result_committed', result_committed, 'created', created, 'started', started, \
         'finished', finished"
    };
}

/// A page of the customer's jobs, newest first. It is read from an index that starts with what
/// the page is filtered by (`jobs_by_customer`, `jobs_by_customer_status_id`,
/// `jobs_by_customer_type`) and ends with the id, so it costs the same however many jobs the
/// customer has.
///
/// On SQLite the page comes back as one row, a JSON array of the jobs: sqlx's SQLite driver
/// hands rows over one at a time from its worker thread, a thread switch each, which made a
/// page of 1,000 jobs take 10 ms instead of 6.5, and 22 ms instead of 12 at the 99th
/// percentile (`benches/list_jobs.sh`).
pub async fn list(db: &Db, customer_id: i64, filter: &ListFilter<'_>) -> ApiResult<Vec<JobRow>> {
    let filters = match (filter.status, filter.job_type) {
        (None, None) => "",
        (Some(_), None) => " AND status = $4",
        (None, Some(_)) => " AND job_type = $4",
        (Some(_), Some(_)) => " AND status = $4 AND job_type = $5",
    };
    let select = format!(
        "SELECT {} FROM jobs WHERE customer_id = $1 AND id < $2{filters} \
         ORDER BY id DESC LIMIT $3",
        job_columns!()
    );
    if db.backend() == Backend::Sqlite {
        let sql = format!(
            "SELECT json_group_array(json_object({})) FROM ({select})",
            job_json_members!()
        );
        let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql))
            .bind(customer_id)
            .bind(filter.before_id)
            .bind(filter.limit);
        if let Some(status) = filter.status {
            query = query.bind(status);
        }
        if let Some(job_type) = filter.job_type {
            query = query.bind(job_type);
        }
        let page = query.fetch_one(db.pool()).await?;
        let mut rows: Vec<JobRow> = serde_json::from_str(&page).map_err(ApiError::internal)?;
        // An aggregate's order is its input's in SQLite, but no standard promises it.
        rows.sort_unstable_by_key(|row| std::cmp::Reverse(row.id));
        return Ok(rows);
    }
    let mut query = sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(select))
        .bind(customer_id)
        .bind(filter.before_id)
        .bind(filter.limit);
    if let Some(status) = filter.status {
        query = query.bind(status);
    }
    if let Some(job_type) = filter.job_type {
        query = query.bind(job_type);
    }
    Ok(query.fetch_all(db.pool()).await?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::jobs::Lane;

    /// With every connection of the shared pool held (customers' calls), a node still shows
    /// it is alive, claims and releases: the job system has connections of its own.
    #[tokio::test]
    async fn leases_never_wait_for_the_shared_pool() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&Db::default_sqlite_url(dir.path()))
            .await
            .unwrap();
        db.migrate().await.unwrap();
        let mut held = Vec::new();
        while let Ok(Ok(conn)) =
            tokio::time::timeout(Duration::from_millis(200), db.pool().acquire()).await
        {
            held.push(conn);
        }
        assert!(!held.is_empty());
        let limits = ConcurrencyLimits {
            transfers: 1,
            transfers_per_customer: 1,
        };
        let lease_work = async {
            node_alive(&db, "n").await?;
            let claimed = claim(&db, "n", 30_000, limits, Lane::Quick, "").await?;
            release_own_leases(&db, "n").await?;
            ApiResult::Ok(claimed)
        };
        let claimed = tokio::time::timeout(Duration::from_secs(10), lease_work)
            .await
            .expect("the job system waited for the shared pool")
            .unwrap();
        assert!(claimed.is_none());
        drop(held);
    }
}
