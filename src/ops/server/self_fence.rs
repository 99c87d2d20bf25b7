//! A node shows the others it is alive (`nodes.last_seen`, every [`ALIVE_EVERY`]), and stops
//! its VMs when it cannot: self-fencing.
//!
//! With shared storage (RBD) a server whose node stopped answering for a whole job lease may
//! be started on another node (`power::start_server`). A node cut off from the database (a
//! network partition) still runs its VMs, on disks another node is about to open. So a node
//! that has not renewed its heartbeat for [`fence_after`] (well within the lease) powers off
//! every VM it runs, before any other node may take one over: at no moment do two nodes run
//! one server. While it stays cut off it keeps them off (a start that was under way when the
//! link went is stopped too). When the database answers again, the servers it stopped are
//! recorded stopped, unless another node runs them now; none is started again.
//!
//! Only a node whose servers another node could take over fences itself: shared storage on a
//! shared (PostgreSQL) database. With local files a server stays with its node, and a database
//! blip must not power its VMs off.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::*;
use crate::db::Backend;
use crate::jobs::identity::ALIVE_EVERY;

/// How often the watchdog looks at the age of the last heartbeat.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// The reason a self-fenced server's status carries.
const FENCED: &str = "its node was cut off from the database and powered its VM off";

/// How long after its last heartbeat a node cut off from the database powers its VMs off:
/// two thirds of the lease (at least a second before it ends), so that the VMs are off before
/// any node sees the lease run out.
pub fn fence_after(lease: Duration) -> Duration {
    let margin = (lease / 3).max(Duration::from_secs(1));
    lease.saturating_sub(margin)
}

/// Renews this node's heartbeat every [`ALIVE_EVERY`] until `stop`; and, when this node's
/// servers could be taken over by another, fences itself while the heartbeat cannot be renewed.
pub async fn keep_node_alive(state: AppState, stop: CancellationToken) {
    let last_beat = Arc::new(Mutex::new(Instant::now()));
    let fences = state.storage.is_shared() && state.db.backend() == Backend::Postgres;
    if fences {
        tokio::spawn(watch_heartbeat(
            state.clone(),
            last_beat.clone(),
            stop.clone(),
        ));
    }
    let mut tick = tokio::time::interval(ALIVE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let started = Instant::now();
        // A database that does not answer must not hold the next beat up.
        match tokio::time::timeout(ALIVE_EVERY, state.jobs.show_alive()).await {
            Ok(Ok(())) => *last_beat.lock().unwrap() = started,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "recording that this node is alive failed")
            }
            Err(_) => tracing::warn!(
                "recording that this node is alive failed: the database did not answer in time"
            ),
        }
    }
}

/// Powers this node's VMs off once its last heartbeat is [`fence_after`] old, keeps them off
/// while it stays so, and records the servers it stopped when the heartbeat moves again.
async fn watch_heartbeat(state: AppState, last_beat: Arc<Mutex<Instant>>, stop: CancellationToken) {
    let lease = Duration::from_millis(state.jobs.lease_ms().max(0) as u64);
    let limit = fence_after(lease);
    let mut cut_off = false;
    // Servers powered off while cut off, to record once the database answers.
    let mut fenced: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(WATCH_EVERY) => {}
            _ = stop.cancelled() => return,
        }
        let age = last_beat.lock().unwrap().elapsed();
        if age >= limit {
            if !cut_off {
                tracing::error!(
                    since_last_heartbeat = ?age, lease = ?lease,
                    "this node cannot reach the database: powering its VMs off before another \
                     node may take their servers over (self-fencing)"
                );
                cut_off = true;
            }
            for uuid in power_off_all(&state).await {
                if !fenced.contains(&uuid) {
                    fenced.push(uuid);
                }
            }
        } else if cut_off || !fenced.is_empty() {
            if cut_off {
                tracing::warn!(
                    servers = fenced.len(),
                    "this node reaches the database again; the VMs it powered off stay off"
                );
                cut_off = false;
            }
            match record_fenced(&state, &fenced).await {
                Ok(()) => fenced.clear(),
                Err(err) => {
                    tracing::warn!(error = %err, "recording the servers this node fenced failed")
                }
            }
        }
    }
}

/// Powers off every VM this node runs; returns their servers' uuids.
async fn power_off_all(state: &AppState) -> Vec<String> {
    let hypervisor = state.hypervisor.clone();
    let stopped = tokio::task::spawn_blocking(move || {
        let running = hypervisor.running();
        std::thread::scope(|scope| {
            let stops: Vec<_> = running
                .iter()
                .map(|uuid| {
                    let hypervisor = &hypervisor;
                    scope.spawn(move || (uuid, hypervisor.stop(uuid, StopMethod::PowerOff)))
                })
                .collect();
            stops
                .into_iter()
                .filter_map(|stop| stop.join().ok())
                .map(|(uuid, result)| {
                    match &result {
                        Ok(()) => tracing::warn!(server = %uuid, "self-fencing: VM powered off"),
                        Err(err) => tracing::error!(server = %uuid, error = %err,
                            "self-fencing: powering a VM off failed"),
                    }
                    uuid.clone()
                })
                .collect::<Vec<_>>()
        })
    })
    .await;
    stopped.unwrap_or_default()
}

/// Records the servers this node powered off while cut off as stopped, with the reason,
/// unless another node runs them now (or they changed since).
async fn record_fenced(state: &AppState, uuids: &[String]) -> ApiResult<()> {
    let mut recorded = 0;
    for uuid in uuids {
        recorded += sqlx::query(
            "UPDATE servers SET status = $1, status_reason = $2, metadata_token = NULL \
             WHERE uuid = $3 AND node = $4 AND status = $5",
        )
        .bind(ServerStatus::Stopped.code())
        .bind(FENCED)
        .bind(uuid)
        .bind(state.jobs.node_id())
        .bind(ServerStatus::Running.code())
        .execute(state.db.pool())
        .await?
        .rows_affected();
    }
    if recorded > 0 {
        tracing::info!(
            servers = recorded,
            "recorded the servers this node fenced as stopped"
        );
        // Their taps and rules go with them.
        plan::sync_logged(state).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_fences_itself_well_before_its_lease_ends() {
        let s = Duration::from_secs;
        assert_eq!(fence_after(s(30)), s(20));
        assert_eq!(fence_after(s(6)), s(4));
        assert_eq!(fence_after(s(2)), s(1));
    }
}
