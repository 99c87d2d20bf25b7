//! The metrics that are state rather than events, read from the database when `/metrics` is
//! scraped (`crate::metrics` holds them all): jobs by kind and status (the whole cluster's),
//! this node's running VMs and storage, and every node's liveness.

use crate::db::now_ms;
use crate::error::ApiResult;
use crate::jobs::JobStatus;
use crate::metrics::METRICS;
use crate::ops::server_status::ServerStatus;
use crate::ops::state::AppState;

/// A job status as a label.
fn status_name(code: i64) -> &'static str {
    match code {
        c if c == JobStatus::Successful.code() => "succeeded",
        c if c == JobStatus::InProgress.code() => "running",
        c if c == JobStatus::Failed.code() => "failed",
        c if c == JobStatus::Cancelled.code() => "cancelled",
        c if c == JobStatus::NotStarted.code() => "queued",
        c if c == JobStatus::Waiting.code() => "waiting",
        _ => "unknown",
    }
}

/// Sets the gauges from the database, then renders every metric.
pub async fn render(state: &AppState) -> ApiResult<String> {
    let mut conn = state.db.pool().acquire().await?;
    let jobs: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT job_type, status, COUNT(*) FROM jobs GROUP BY job_type, status")
            .fetch_all(&mut *conn)
            .await?;
    let node = state.jobs.node_id();
    let vms: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM servers WHERE node = $1 AND status = $2")
            .bind(node)
            .bind(ServerStatus::Running.code())
            .fetch_one(&mut *conn)
            .await?;
    let volume_bytes: i64 =
        sqlx::query_scalar("SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM volumes")
            .fetch_one(&mut *conn)
            .await?;
    let nodes: Vec<(String, i64)> = sqlx::query_as("SELECT id, last_seen FROM nodes")
        .fetch_all(&mut *conn)
        .await?;
    drop(conn);
    let storage = state.storage.clone();
    let free = tokio::task::spawn_blocking(move || storage.free_bytes()).await?;

    METRICS.jobs.reset();
    for (kind, status, count) in jobs {
        METRICS
            .jobs
            .with_label_values(&[kind.as_str(), status_name(status)])
            .set(count);
    }
    METRICS.vms_running.set(vms);
    METRICS.storage_volume_bytes.set(volume_bytes);
    if let Ok(Some(free)) = free {
        METRICS.storage_free_bytes.set(free as i64);
    }
    let now = now_ms();
    let alive_since = now - state.jobs.lease_ms();
    METRICS.node_up.reset();
    METRICS.node_heartbeat_age_seconds.reset();
    for (id, last_seen) in nodes {
        METRICS
            .node_up
            .with_label_values(&[id.as_str()])
            .set(i64::from(last_seen >= alive_since));
        METRICS
            .node_heartbeat_age_seconds
            .with_label_values(&[id.as_str()])
            .set((now - last_seen).max(0) / 1000);
    }
    Ok(METRICS.render())
}
