//! What virtual machines do on their own (exits, crashes, a restart of this node), and their
//! serial consoles.

use super::power::vm_gone;
use super::*;
use crate::jobs::node_proof::Request as NodeRequest;

/// Records a VM that ended on its own: a running server (or one whose start job has not yet
/// recorded it running) becomes stopped, or in error with the reason. A server being stopped
/// or destroyed is left to its job, and one placed on another node to that node.
pub async fn record_vm_event(state: &AppState, event: VmEvent) -> ApiResult<()> {
    let (status, reason) = match &event.state {
        VmState::Running => return Ok(()),
        VmState::Stopped => (ServerStatus::Stopped, None),
        VmState::Failed(reason) => (ServerStatus::Error, Some(reason.as_str())),
    };
    let recorded = sqlx::query(
        "UPDATE servers SET status = $1, status_reason = $2, metadata_token = NULL \
         WHERE uuid = $3 AND (status = $4 OR status = $5) AND (node IS NULL OR node = $6)",
    )
    .bind(status.code())
    .bind(reason)
    .bind(&event.server_uuid)
    .bind(ServerStatus::Running.code())
    .bind(ServerStatus::Starting.code())
    // A VM of a server that has since started on another node says nothing about it.
    .bind(state.jobs.node_id())
    .execute(state.db.pool())
    .await?;
    if recorded.rows_affected() > 0 {
        tracing::info!(server = %event.server_uuid, status = status.code(), reason,
            "a server's VM ended on its own");
        // Its tap and rules go with it.
        plan::sync_logged(state).await;
    }
    Ok(())
}

/// After a restart: servers this node ran are taken back under supervision if their VM still
/// runs, or marked stopped: never a stale "running".
pub async fn recover_servers(state: &AppState) -> ApiResult<()> {
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, uuid FROM servers WHERE status = $1 AND node = $2")
            .bind(ServerStatus::Running.code())
            .bind(state.jobs.node_id())
            .fetch_all(state.db.pool())
            .await?;
    for (id, uuid) in rows {
        let hypervisor = state.hypervisor.clone();
        let found = tokio::task::spawn_blocking(move || hypervisor.adopt(&uuid)).await?;
        let mut conn = state.db.pool().acquire().await?;
        match found {
            VmState::Running => {
                tracing::info!(server_id = id, "server still running; supervising it again")
            }
            VmState::Stopped => {
                tracing::info!(server_id = id, "server's VM is gone; marking it stopped");
                vm_gone(&mut conn, id, ServerStatus::Stopped, None).await?;
            }
            VmState::Failed(reason) => {
                tracing::warn!(server_id = id, %reason, "server's VM could not be taken back");
                vm_gone(&mut conn, id, ServerStatus::Error, Some(&reason)).await?;
            }
        }
    }
    power_off_servers_that_moved(state).await
}

/// With shared storage, a server whose node was lost may have been started again on another
/// node ([`super::power::start_server`]); the VM it left here, if it still runs, was fenced
/// off its disks then. When this node comes back, that VM is powered off. (Each node has a
/// data directory of its own then, so the VMs found here are this node's.)
async fn power_off_servers_that_moved(state: &AppState) -> ApiResult<()> {
    if !state.storage.is_shared() {
        return Ok(());
    }
    let moved: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, uuid FROM servers WHERE node IS NOT NULL AND node <> $1 \
         AND status IN ($2, $3)",
    )
    .bind(state.jobs.node_id())
    .bind(ServerStatus::Running.code())
    .bind(ServerStatus::Starting.code())
    .fetch_all(state.db.pool())
    .await?;
    for (id, uuid) in moved {
        let hypervisor = state.hypervisor.clone();
        let ended = tokio::task::spawn_blocking(move || {
            if hypervisor.adopt(&uuid) != VmState::Running {
                return Ok(false);
            }
            hypervisor.stop(&uuid, StopMethod::PowerOff).map(|()| true)
        })
        .await?;
        match ended {
            Ok(true) => tracing::warn!(
                server_id = id,
                "powered off the VM this node ran before it was lost: the server runs on another node now"
            ),
            Ok(false) => {}
            Err(err) => tracing::warn!(server_id = id, error = %err,
                "could not power off the VM of a server that moved to another node"),
        }
    }
    Ok(())
}

/// How much of the serial console GetConsoleLog returns.
pub const CONSOLE_LOG_BYTES: usize = 64 * 1024;

/// The console of a VM runs where the VM does: a server placed on another live node is read
/// from that node (when nodes keep data directories of their own, only it has the file).
pub async fn get_console_log(ctx: &Ctx, a: args::GetConsoleLog) -> ApiResult<String> {
    let (server, address) = {
        let mut conn = ctx.state.db.pool().acquire().await?;
        let server = own_server(&mut conn, ctx.customer_id(), a.server_id).await?;
        let address = match server.node.as_deref() {
            Some(node) if node != ctx.state.jobs.node_id() => {
                live_node_address(&mut conn, &ctx.state, node).await?
            }
            _ => None,
        };
        (server, address)
    };
    if let Some(address) = address {
        let node = server.node.as_deref().unwrap_or_default();
        match console_on_node(&ctx.state, node, &address, &server.uuid).await {
            Ok(bytes) => return Ok(console_text(&bytes)),
            // Nodes sharing one data directory read it here as well.
            Err(err) => tracing::warn!(server_id = server.id, node = ?server.node, error = %err,
                "reading a console on its node failed; reading it here"),
        }
    }
    let bytes = console_here(&ctx.state, &server.uuid).await?;
    Ok(console_text(&bytes))
}

/// A request another node of the cluster makes of this one, with the proof it carries
/// (`NODE_PROOF_HEADER`).
pub struct NodeCall<'a> {
    pub method: &'a str,
    /// The path and query, as the request line has them.
    pub path: &'a str,
    pub body: &'a [u8],
    pub proof: &'a str,
}

/// The end of the console of a VM of this node, for another node that proves it is one of
/// the cluster's (`crate::jobs::node_proof`: each proof accepted once). `None`: the proof is
/// wrong, stale or used.
pub async fn console_for_node(
    state: &AppState,
    call: NodeCall<'_>,
    server_uuid: &str,
) -> Option<ApiResult<Vec<u8>>> {
    if !accepts_node_call(state, &call) {
        return None;
    }
    Some(console_here(state, server_uuid).await)
}

/// Whether `call` carries a good proof that another node of the cluster made it (each proof
/// is accepted once).
pub fn accepts_node_call(state: &AppState, call: &NodeCall<'_>) -> bool {
    let request = crate::jobs::node_proof::Request {
        node: state.jobs.node_id(),
        method: call.method,
        path: call.path,
        body: call.body,
    };
    state.jobs.accept_node_proof(&request, call.proof)
}

/// The end of the console of a VM of this node ([`CONSOLE_LOG_BYTES`]).
pub async fn console_here(state: &AppState, server_uuid: &str) -> ApiResult<Vec<u8>> {
    let hypervisor = state.hypervisor.clone();
    let uuid = server_uuid.to_string();
    Ok(
        tokio::task::spawn_blocking(move || hypervisor.console_log(&uuid, CONSOLE_LOG_BYTES))
            .await??,
    )
}

/// The path a node reads another node's console of `server_uuid` at.
pub fn console_path(server_uuid: &str) -> String {
    format!("/internal/v1/console/{server_uuid}")
}

/// The API address of `node` if its heartbeat is within the lease.
pub async fn live_node_address(
    conn: &mut AnyConnection,
    state: &AppState,
    node: &str,
) -> ApiResult<Option<String>> {
    let alive_since = crate::db::now_ms() - state.jobs.lease_ms();
    Ok(sqlx::query_scalar(
        "SELECT address FROM nodes WHERE id = $1 AND last_seen >= $2 AND address IS NOT NULL",
    )
    .bind(node)
    .bind(alive_since)
    .fetch_optional(conn)
    .await?)
}

/// Reads a console from `node`, at `address`, proving with a key derived from the cluster key
/// that the request comes from a node (the customer's right to it was checked here).
async fn console_on_node(
    state: &AppState,
    node: &str,
    address: &str,
    server_uuid: &str,
) -> anyhow::Result<Vec<u8>> {
    let path = console_path(server_uuid);
    let proof = state.jobs.node_proof(&NodeRequest {
        node,
        method: "GET",
        path: &path,
        body: b"",
    })?;
    let url = format!("{}{path}", address.trim_end_matches('/'));
    let response = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?
        .get(&url)
        .header(NODE_PROOF_HEADER, proof)
        .send()
        .await?
        .error_for_status()?;
    let bytes = response.bytes().await?;
    anyhow::ensure!(
        bytes.len() <= CONSOLE_LOG_BYTES,
        "the node answered {} bytes",
        bytes.len()
    );
    Ok(bytes.to_vec())
}

/// The header a node's console request carries its proof in.
pub const NODE_PROOF_HEADER: &str = "x-extility-node-proof";

/// Console output as text any JSON or XML reader takes: bytes that are not UTF-8 become
/// U+FFFD, line ends become `\n`, and control characters other than tab and newline (which XML
/// 1.0 cannot carry, like the ESC of terminal colours) become their Unicode control pictures
/// (`␛`).
fn console_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .replace("\r\n", "\n")
        .chars()
        .map(|c| match c {
            '\t' | '\n' => c,
            '\u{0}'..='\u{1f}' => char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'),
            '\u{7f}' => '\u{2421}',
            _ => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::console_text;

    #[test]
    fn console_text_is_safe_for_xml() {
        assert_eq!(console_text(b"boot\r\nok\tdone\n"), "boot\nok\tdone\n");
        assert_eq!(
            console_text(b"\x1b[1mX\x00\xff"),
            "\u{241b}[1mX\u{2400}\u{fffd}"
        );
    }
}
