//! Starting, stopping and destroying servers: the operations queue jobs, and the jobs drive
//! the hypervisor.

use super::disks::lock_server_row;
use super::*;

pub(super) async fn set_status(
    conn: &mut AnyConnection,
    server_id: i64,
    status: ServerStatus,
    reason: Option<&str>,
) -> ApiResult<()> {
    sqlx::query("UPDATE servers SET status = $1, status_reason = $2 WHERE id = $3")
        .bind(status.code())
        .bind(reason)
        .bind(server_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records that the server's VM no longer runs. The secret it read its metadata with ends
/// with it: the next start hands out a new one.
pub(super) async fn vm_gone(
    conn: &mut AnyConnection,
    server_id: i64,
    status: ServerStatus,
    reason: Option<&str>,
) -> ApiResult<()> {
    sqlx::query(
        "UPDATE servers SET status = $1, status_reason = $2, metadata_token = NULL WHERE id = $3",
    )
    .bind(status.code())
    .bind(reason)
    .bind(server_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves a server into a transitional status and queues the job of kind `K` that finishes
/// the move, in one transaction. A start runs where placement put it; stopping and destroying
/// act on the VM, so they run where it runs.
async fn queue_server_job<K: JobKind>(
    ctx: &Ctx,
    mut tx: Tx,
    server: &ServerRow,
    status: ServerStatus,
    verb: &str,
    params: K,
) -> ApiResult<i64> {
    let target_node = match status {
        ServerStatus::Starting => {
            let chosen = placement::choose_node(&mut tx, &ctx.state, server).await?;
            if let Some(node) = &chosen {
                // Counted on its node from now on, so that the next placement sees it.
                sqlx::query("UPDATE servers SET node = $1 WHERE id = $2")
                    .bind(node)
                    .bind(server.id)
                    .execute(&mut *tx)
                    .await?;
            }
            chosen
        }
        _ => server.node.clone(),
    };
    set_status(&mut tx, server.id, status, None).await?;
    let name = format!("{verb} server \"{}\"", server.name);
    let job_id = ctx
        .enqueue(&mut tx, params, name)
        .item("server", server.id)
        .on_node(target_node)
        .await?;
    tx.commit().await?;
    Ok(job_id)
}

pub async fn start_server(ctx: &Ctx, a: args::StartServer) -> ApiResult<i64> {
    let mut tx = ctx.begin_write().await?;
    let server = own_server(&mut tx, ctx.customer_id(), a.server_id).await?;
    lock_server_row(&mut tx, server.id).await?;
    let server = own_server(&mut tx, ctx.customer_id(), a.server_id).await?;
    let lost = running_on_a_lost_node(&mut tx, &ctx.state, &server).await?;
    if !lost {
        server.require_status(&[ServerStatus::Stopped, ServerStatus::Error], "")?;
    }
    create_image::ensure_server_disks_not_being_imaged(&mut tx, server.id).await?;
    // From now on the server counts as running (one lost with its node already does).
    let need = Need {
        running_vcpus: if lost { 0 } else { server.processors },
        running_memory_mb: if lost { 0 } else { server.memory },
        concurrent_jobs: 1,
        ..Need::default()
    };
    quota::ensure_room(&mut tx, &ctx.state, ctx.customer_id(), need).await?;
    let job = StartServerJob {
        server_id: server.id,
    };
    queue_server_job(ctx, tx, &server, ServerStatus::Starting, "Start", job).await
}

/// Whether the server is recorded running on a node that stopped answering (its heartbeat is
/// older than the job lease), so that StartServer may start it on another node. Only with
/// shared storage: the start fences the lost node's VM off the disks first, since it may yet
/// run. With the file storage its disks are on that node: CONFLICT.
async fn running_on_a_lost_node(
    conn: &mut AnyConnection,
    state: &AppState,
    server: &ServerRow,
) -> ApiResult<bool> {
    let Some(node) = server.node.as_deref() else {
        return Ok(false);
    };
    if server.status != ServerStatus::Running.code() {
        return Ok(false);
    }
    let last_seen: Option<i64> = sqlx::query_scalar("SELECT last_seen FROM nodes WHERE id = $1")
        .bind(node)
        .fetch_optional(&mut *conn)
        .await?;
    let alive_since = now_ms() - state.jobs.lease_ms();
    if last_seen.is_some_and(|seen| seen >= alive_since) {
        return Ok(false);
    }
    if !state.storage.is_shared() {
        return Err(ApiError::Conflict(format!(
            "the server runs on node {node}, which stopped answering, and its disks are files \
             there; start that node again (its VM may still run)"
        )));
    }
    tracing::warn!(
        server_id = server.id,
        node,
        "starting a server again whose node stopped answering; its VM there is fenced off its disks"
    );
    Ok(true)
}

pub async fn stop_server(ctx: &Ctx, a: args::StopServer) -> ApiResult<i64> {
    let method = match a.stop_method {
        1 => StopHow::Shutdown,
        2 => StopHow::Poweroff,
        other => {
            return Err(ApiError::invalid(
                "stop_method",
                format!("must be 1 (shut down) or 2 (power off), got {other}"),
            ));
        }
    };
    let mut tx = ctx.begin_write().await?;
    let server = own_server(&mut tx, ctx.customer_id(), a.server_id).await?;
    server.require_status(&[ServerStatus::Running, ServerStatus::Error], "")?;
    let job = StopServerJob {
        server_id: server.id,
        method,
    };
    queue_server_job(ctx, tx, &server, ServerStatus::Stopping, "Stop", job).await
}

pub async fn destroy_server(ctx: &Ctx, a: args::DestroyServer) -> ApiResult<i64> {
    let mut tx = ctx.begin_write().await?;
    let server = own_server(&mut tx, ctx.customer_id(), a.server_id).await?;
    lock_server_row(&mut tx, server.id).await?;
    let server = own_server(&mut tx, ctx.customer_id(), a.server_id).await?;
    create_image::ensure_server_disks_not_being_imaged(&mut tx, server.id).await?;
    let settled = [
        ServerStatus::Running,
        ServerStatus::Stopped,
        ServerStatus::Error,
    ];
    server.require_status(&settled, "; try again when it has finished")?;
    let job = DestroyServerJob {
        server_id: server.id,
    };
    queue_server_job(ctx, tx, &server, ServerStatus::Stopping, "Destroy", job).await
}

/// The server a server job is about.
async fn job_server(job: &RunningJob<AppState>, server_id: i64) -> ApiResult<ServerRow> {
    let mut conn = job.state.db.pool().acquire().await?;
    own_server(&mut conn, job.row.customer_id, server_id).await
}

/// What a failed server job knows of the VM.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Vm {
    /// It does not run (it never started, or its start failed): its metadata secret ends.
    NotRunning,
    /// It may still run (stopping or destroying it failed).
    MayRun,
}

/// Records what a failed server job leaves the server as, if this attempt still holds the
/// job: a stale attempt changes nothing. A failure to record is logged; the job's own error is
/// what counts. A job that failed because the database went away (`cause`) is not over: its
/// attempt is given up unended and the next one resumes it, so the server stays as it is for
/// that one (an "error" recorded now would outlive the next attempt's success).
async fn job_failed(
    job: &RunningJob<AppState>,
    server_id: i64,
    (status, reason): (ServerStatus, Option<&str>),
    vm: Vm,
    cause: &ApiError,
) {
    if cause.is_database_unavailable() {
        return;
    }
    let recorded = async {
        let mut tx = job.begin_fenced().await?;
        match vm {
            Vm::NotRunning => vm_gone(&mut tx, server_id, status, reason).await?,
            Vm::MayRun => set_status(&mut tx, server_id, status, reason).await?,
        }
        tx.commit().await?;
        Ok::<_, ApiError>(())
    };
    if let Err(err) = recorded.await {
        tracing::warn!(job_id = job.row.id, server_id, error = %err,
            "recording the server's state after a failed job failed");
    }
}

/// What a server job that ended unsuccessfully ([`JobKind::ended_unsuccessfully`]: failed,
/// given up after interruptions, cancelled) leaves a server still marked "starting" or
/// "stopping" as: what its VM is. Running here, it is `running`; not running here (or on
/// another node, where it cannot be seen from here), `not_running`, with the job's reason:
/// states from which the call can be made again. A server a failure path already settled is
/// left alone, as is one whose job this attempt no longer holds.
async fn settle_after_failure(
    job: &RunningJob<AppState>,
    server_id: i64,
    what: &str,
    not_running: ServerStatus,
    reason: &str,
) {
    let settled = async {
        let server = job_server(job, server_id).await?;
        let transitional = [ServerStatus::Starting.code(), ServerStatus::Stopping.code()];
        if !transitional.contains(&server.status) {
            return Ok(());
        }
        let vm = if vm_on_lost_node(&job.state, &server).is_some() {
            VmState::Stopped
        } else {
            let hypervisor = job.state.hypervisor.clone();
            let uuid = server.uuid.clone();
            tokio::task::spawn_blocking(move || hypervisor.state(&uuid)).await?
        };
        let reason = format!("{what} did not complete: {reason}");
        let mut tx = job.begin_fenced().await?;
        let still_transitional = "AND status IN ($4, $5)";
        let sql = if vm == VmState::Running {
            format!(
                "UPDATE servers SET status = $1, status_reason = $2 WHERE id = $3 {still_transitional}"
            )
        } else {
            format!(
                "UPDATE servers SET status = $1, status_reason = $2, metadata_token = NULL \
                 WHERE id = $3 {still_transitional}"
            )
        };
        let status = if vm == VmState::Running {
            ServerStatus::Running
        } else {
            not_running
        };
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(status.code())
            .bind(&reason)
            .bind(server.id)
            .bind(transitional[0])
            .bind(transitional[1])
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(job_id = job.row.id, server_id, status = status.code(), %reason,
            "a server job ended unsuccessfully; its server is settled");
        Ok::<_, ApiError>(())
    };
    if let Err(err) = settled.await {
        tracing::warn!(job_id = job.row.id, server_id, error = %err,
            "settling the server after an unsuccessful job failed");
    }
}

fn outcome(server: &ServerRow) -> JobOutcome {
    JobOutcome::item("server", server.id)
}

/// Cuts off whatever else still has the server's disks open ([`crate::storage::Storage::fence`]).
async fn fence_disks(state: &AppState, server: &ServerRow) -> ApiResult<()> {
    let mut conn = state.db.pool().acquire().await?;
    let mut volumes = Vec::new();
    for d in attached_disks(&mut conn, server.id).await? {
        volumes.push(volumes::get(&mut conn, d.volume_id).await?.volume_file()?);
    }
    drop(conn);
    let storage = state.storage.clone();
    tokio::task::spawn_blocking(move || {
        volumes
            .iter()
            .try_for_each(|volume| storage.fence(volume).map(drop))
    })
    .await??;
    Ok(())
}

/// What the hypervisor needs to boot the server: its disks in attach order, its NIC, and the
/// secret that lets the VM read its metadata. The secret is new at every start; only its hash
/// is stored.
async fn vm_spec(state: &AppState, server: &ServerRow) -> ApiResult<VmSpec> {
    let mut conn = state.db.pool().acquire().await?;
    let mut disks = Vec::new();
    for d in attached_disks(&mut conn, server.id).await? {
        let volume = volumes::get(&mut conn, d.volume_id).await?.volume_file()?;
        disks.push(VmDisk {
            location: state.storage.location(&volume),
            format: volume.format,
            media: if d.media == "iso" {
                Media::Iso
            } else {
                Media::Disk
            },
        });
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    sqlx::query("UPDATE servers SET metadata_token = $1 WHERE id = $2")
        .bind(super::metadata::token_hash(&token))
        .bind(server.id)
        .execute(&mut *conn)
        .await?;
    Ok(VmSpec {
        server_uuid: server.uuid.clone(),
        name: server.name.clone(),
        processors: server.processors.max(1) as u32,
        memory_mb: server.memory.max(64) as u64,
        disks,
        nic: server.vlan_id.map(|vlan_id| crate::hypervisor::VmNic {
            vlan_id,
            mac: mac_address(&server.uuid),
            // On a tenant network the NIC is the tap the network engine made; without one,
            // QEMU's confined user-mode network.
            tap: (state.network.mode() == crate::network::Mode::Bridged)
                .then(|| crate::network::tap_name(server.id)),
        }),
        metadata: Some(MetadataAccess {
            // This node's own listener: the VM runs here, and its forward connects here.
            url: format!("{}/metadata/v1/server.xml", state.local_url),
            token,
        }),
    })
}

/// StartServer's job: boots the server's VM here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartServerJob {
    pub server_id: i64,
}

impl JobKind for StartServerJob {
    const NAME: &'static str = "StartServer";
    const LANE: Lane = Lane::Quick;
    type Context = AppState;

    async fn run(self, job: &RunningJob<AppState>) -> ApiResult<JobOutcome> {
        let state = &job.state;
        let server = job_server(job, self.server_id).await?;
        if let Err(err) = job.check_cancelled() {
            job_failed(
                job,
                server.id,
                (ServerStatus::Stopped, None),
                Vm::NotRunning,
                &err,
            )
            .await;
            return Err(err);
        }
        let hypervisor = state.hypervisor.clone();
        let uuid = server.uuid.clone();
        // A start resumed after a restart may find the VM already up.
        let already = tokio::task::spawn_blocking(move || hypervisor.state(&uuid)).await?;
        if already != VmState::Running {
            // The VM will run here: its NIC's tap, bridge, DHCP and rules must exist first.
            if let Err(err) = claim_and_network(state, &server).await {
                let reason = err.to_string();
                let failed = (ServerStatus::Error, Some(reason.as_str()));
                job_failed(job, server.id, failed, Vm::NotRunning, &err).await;
                plan::sync_logged(state).await;
                return Err(err);
            }
            let spec = vm_spec(state, &server).await?;
            // Nothing else may write its disks: a VM of a lost node still may.
            if let Err(err) = fence_disks(state, &server).await {
                let reason = format!("its disks could not be fenced: {err}");
                let failed = (ServerStatus::Error, Some(reason.as_str()));
                job_failed(job, server.id, failed, Vm::NotRunning, &err).await;
                plan::sync_logged(state).await;
                return Err(err);
            }
            let hypervisor = state.hypervisor.clone();
            let started = tokio::task::spawn_blocking(move || hypervisor.start(&spec)).await?;
            if let Err(err) = started {
                let reason = err.0.clone();
                let failed = (ServerStatus::Error, Some(reason.as_str()));
                let err = ApiError::from(err);
                job_failed(job, server.id, failed, Vm::NotRunning, &err).await;
                plan::sync_logged(state).await;
                return Err(err);
            }
        }
        // Only from "starting": a VM that has already ended on its own was recorded as such by
        // `record_vm_event`, and stays so.
        let mut tx = job.begin_fenced().await?;
        sqlx::query(
            "UPDATE servers SET status = $1, status_reason = NULL, node = $2 WHERE id = $3 \
             AND status = $4",
        )
        .bind(ServerStatus::Running.code())
        .bind(state.jobs.node_id())
        .bind(server.id)
        .bind(ServerStatus::Starting.code())
        .execute(&mut *tx)
        .await?;
        job.commit(tx, outcome(&server)).await
    }

    async fn ended_unsuccessfully(self, job: &RunningJob<AppState>, reason: &str) {
        settle_after_failure(
            job,
            self.server_id,
            "starting the server",
            ServerStatus::Error,
            reason,
        )
        .await;
    }
}

/// Records this node as the one running the server (so its NIC is in this node's network
/// plan) and applies the plan.
async fn claim_and_network(state: &AppState, server: &ServerRow) -> ApiResult<()> {
    sqlx::query("UPDATE servers SET node = $1 WHERE id = $2 AND status = $3")
        .bind(state.jobs.node_id())
        .bind(server.id)
        .bind(ServerStatus::Starting.code())
        .execute(state.db.pool())
        .await?;
    plan::sync(state).await
}

async fn power_off(state: &AppState, server: &ServerRow, method: StopMethod) -> ApiResult<()> {
    let hypervisor = state.hypervisor.clone();
    let uuid = server.uuid.clone();
    tokio::task::spawn_blocking(move || hypervisor.stop(&uuid, method)).await??;
    Ok(())
}

/// The node a server's VM ran on, when that is not this node. A job aimed at that node runs
/// here only once the node has stopped showing it is alive, and its VM went with it.
fn vm_on_lost_node<'a>(state: &AppState, server: &'a ServerRow) -> Option<&'a str> {
    server
        .node
        .as_deref()
        .filter(|node| *node != state.jobs.node_id())
}

/// How StopServer stops the VM.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopHow {
    /// The ACPI power button, then power off after the timeout.
    Shutdown,
    Poweroff,
}

/// StopServer's job: stops the server's VM where it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StopServerJob {
    pub server_id: i64,
    pub method: StopHow,
}

impl JobKind for StopServerJob {
    const NAME: &'static str = "StopServer";
    const LANE: Lane = Lane::Quick;
    type Context = AppState;

    async fn run(self, job: &RunningJob<AppState>) -> ApiResult<JobOutcome> {
        let state = &job.state;
        let server = job_server(job, self.server_id).await?;
        let method = match self.method {
            StopHow::Shutdown => StopMethod::Shutdown,
            StopHow::Poweroff => StopMethod::PowerOff,
        };
        if let Some(node) = vm_on_lost_node(state, &server) {
            tracing::warn!(server_id = server.id, %node, "the server's node is gone; so is its VM");
        } else if let Err(err) = power_off(state, &server, method).await {
            let reason = err.to_string();
            let failed = (ServerStatus::Error, Some(reason.as_str()));
            job_failed(job, server.id, failed, Vm::MayRun, &err).await;
            return Err(err);
        }
        let mut tx = job.begin_fenced().await?;
        vm_gone(&mut tx, server.id, ServerStatus::Stopped, None).await?;
        let done = job.commit(tx, outcome(&server)).await?;
        plan::sync_logged(state).await;
        Ok(done)
    }

    async fn ended_unsuccessfully(self, job: &RunningJob<AppState>, reason: &str) {
        settle_after_failure(
            job,
            self.server_id,
            "stopping the server",
            ServerStatus::Stopped,
            reason,
        )
        .await;
    }
}

/// DestroyServer's job: powers the VM off where it runs, then deletes the server and the disks
/// made with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DestroyServerJob {
    pub server_id: i64,
}

impl JobKind for DestroyServerJob {
    const NAME: &'static str = "DestroyServer";
    const LANE: Lane = Lane::Quick;
    type Context = AppState;

    async fn run(self, job: &RunningJob<AppState>) -> ApiResult<JobOutcome> {
        let state = &job.state;
        let server = job_server(job, self.server_id).await?;
        let hypervisor = state.hypervisor.clone();
        let uuid = server.uuid.clone();
        // Powers the VM off if it runs and removes its files (console log, ...).
        let here = vm_on_lost_node(state, &server).is_none();
        if here
            && let Err(err) = tokio::task::spawn_blocking(move || hypervisor.discard(&uuid)).await?
        {
            let reason = err.0.clone();
            let failed = (ServerStatus::Error, Some(reason.as_str()));
            let err = ApiError::from(err);
            job_failed(job, server.id, failed, Vm::MayRun, &err).await;
            return Err(err);
        }
        let mut tx = job.begin_fenced().await?;
        let mut garbage = Vec::new();
        for d in attached_disks(&mut tx, server.id).await? {
            if d.origin_server_id == Some(server.id) {
                garbage.extend(disk::remove_disk_row(&mut tx, &d).await?);
            } else {
                disk::set_attachment(&mut tx, d.id, None).await?;
            }
        }
        disk::forget_origin_server(&mut tx, server.id).await?;
        port_forward::delete_of_server(&mut tx, server.id).await?;
        ssh_key::forget_server(&mut tx, server.id).await?;
        sqlx::query("DELETE FROM servers WHERE id = $1")
            .bind(server.id)
            .execute(&mut *tx)
            .await?;
        let done = job.commit(tx, outcome(&server)).await?;
        plan::sync_logged(state).await;
        disk::discard_volumes(state, garbage).await;
        Ok(done)
    }

    async fn ended_unsuccessfully(self, job: &RunningJob<AppState>, reason: &str) {
        settle_after_failure(
            job,
            self.server_id,
            "destroying the server",
            ServerStatus::Error,
            reason,
        )
        .await;
    }
}
