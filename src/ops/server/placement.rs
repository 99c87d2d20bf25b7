//! Where StartServer boots a server: on a live node that runs VMs and has room for it, its
//! previous node first (its VM directory and console log are there), else the least loaded.
//!
//! - **Which nodes.** Those whose heartbeat is within the job lease and whose hypervisor is
//!   not `none` (`nodes.can_run_vms`, recorded when a node starts). When there is none, as in
//!   a cluster that only records state, the start job goes to whichever node claims it.
//! - **Room.** Memory is not overcommitted: the memory of the servers running, starting or
//!   stopping on a node plus this one's must fit in the node's. Processors are, up to
//!   [`VCPU_OVERCOMMIT`] virtual per physical. No node with room is CONFLICT, naming what was
//!   needed; nothing changes.
//! - **Least loaded.** The node whose memory would be the smallest share used, then processors,
//!   then its id, so that placements are repeatable.
//!
//! The choice is made in StartServer's transaction, recorded as the server's node (so the next
//! placement counts it there) and aimed at the node (the job's `target_node`); if that node
//! dies before it claims the job, another node takes it (the queue does not wait for a dead
//! node) and records itself. On PostgreSQL the nodes' rows are locked while placing, so
//! concurrent starts take turns.
//! - **Storage.** With shared storage (RBD) any node will do. With the file storage a server
//!   that has run stays on its node, which holds its disks: when that node is down or full,
//!   StartServer is CONFLICT. (A server that never ran goes where placement puts it: every
//!   node must then reach the files the API node made, one data directory, as
//!   `docker-compose.yml` shares it.)

use super::*;

/// Virtual processors started per physical one, at most.
pub const VCPU_OVERCOMMIT: i64 = 4;

/// A live node that runs VMs, with what its servers use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLoad {
    pub id: String,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub used_vcpus: i64,
    pub used_memory_mb: i64,
}

impl NodeLoad {
    /// Whether a server fits; a capacity the node could not read (0) limits nothing.
    fn has_room(&self, vcpus: i64, memory_mb: i64) -> bool {
        (self.memory_mb <= 0 || self.used_memory_mb + memory_mb <= self.memory_mb)
            && (self.vcpus <= 0 || self.used_vcpus + vcpus <= self.vcpus * VCPU_OVERCOMMIT)
    }

    /// The shares of memory and processors used once the server runs here, in thousandths.
    fn load_with(&self, vcpus: i64, memory_mb: i64) -> (i64, i64) {
        (
            (self.used_memory_mb + memory_mb) * 1000 / self.memory_mb.max(1),
            (self.used_vcpus + vcpus) * 1000 / self.vcpus.max(1),
        )
    }
}

/// The node for a server needing `vcpus` and `memory_mb` that ran last on `previous`:
/// `Ok(None)` when no node runs VMs (any node may take the job), CONFLICT when none has room.
pub fn pick(
    nodes: &[NodeLoad],
    vcpus: i64,
    memory_mb: i64,
    previous: Option<&str>,
) -> ApiResult<Option<String>> {
    if nodes.is_empty() {
        return Ok(None);
    }
    let with_room: Vec<&NodeLoad> = nodes
        .iter()
        .filter(|n| n.has_room(vcpus, memory_mb))
        .collect();
    if let Some(previous) = previous
        && let Some(node) = with_room.iter().find(|n| n.id == previous)
    {
        return Ok(Some(node.id.clone()));
    }
    match with_room
        .iter()
        .min_by_key(|n| (n.load_with(vcpus, memory_mb), n.id.clone()))
    {
        Some(node) => Ok(Some(node.id.clone())),
        None => {
            let most_free = nodes
                .iter()
                .filter(|n| n.used_vcpus + vcpus <= n.vcpus * VCPU_OVERCOMMIT)
                .map(|n| n.memory_mb - n.used_memory_mb)
                .max();
            let free = match most_free {
                Some(free) => {
                    format!("the most memory free on a node with processors left is {free} MiB")
                }
                None => "no node has processors left".to_string(),
            };
            Err(ApiError::Conflict(format!(
                "no node has room for a server of {vcpus} processors and {memory_mb} MiB \
                 ({free}); stop a server or add a node"
            )))
        }
    }
}

/// The live nodes that run VMs, with their load apart from `server_id`.
async fn node_loads(
    conn: &mut AnyConnection,
    state: &AppState,
    server_id: i64,
) -> ApiResult<Vec<NodeLoad>> {
    // On PostgreSQL, placements take turns: the nodes' rows stay locked until the start is
    // committed (with its server counted on the chosen node), so two starts at once cannot
    // both take a node's last room. SQLite's write transactions take turns anyway.
    if state.db.backend() == crate::db::Backend::Postgres {
        sqlx::query("SELECT id FROM nodes WHERE can_run_vms = 1 ORDER BY id FOR UPDATE")
            .execute(&mut *conn)
            .await?;
    }
    let alive_since = now_ms() - state.jobs.lease_ms();
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT n.id, n.vcpus, n.memory_mb, \
         (SELECT CAST(COALESCE(SUM(s.processors), 0) AS BIGINT) FROM servers s \
           WHERE s.node = n.id AND s.status IN ($3, $4, $5) AND s.id <> $2), \
         (SELECT CAST(COALESCE(SUM(s.memory), 0) AS BIGINT) FROM servers s \
           WHERE s.node = n.id AND s.status IN ($3, $4, $5) AND s.id <> $2) \
         FROM nodes n WHERE n.last_seen >= $1 AND n.can_run_vms = 1 ORDER BY n.id",
    )
    .bind(alive_since)
    .bind(server_id)
    .bind(ServerStatus::HOLDING_A_NODE[0])
    .bind(ServerStatus::HOLDING_A_NODE[1])
    .bind(ServerStatus::HOLDING_A_NODE[2])
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, vcpus, memory_mb, used_vcpus, used_memory_mb)| NodeLoad {
                id,
                vcpus,
                memory_mb,
                used_vcpus,
                used_memory_mb,
            },
        )
        .collect())
}

/// The node StartServer aims `server`'s start at (see the module's text).
pub async fn choose_node(
    conn: &mut AnyConnection,
    state: &AppState,
    server: &ServerRow,
) -> ApiResult<Option<String>> {
    let mut nodes = node_loads(conn, state, server.id).await?;
    if !state.storage.is_shared()
        && let Some(home) = server.node.as_deref()
        && !nodes.is_empty()
    {
        nodes.retain(|n| n.id == home);
        if nodes.is_empty() {
            return Err(ApiError::Conflict(format!(
                "the server's disks are on node {home}, which is not running; start that node \
                 again (with RBD storage servers start on any node)"
            )));
        }
    }
    pick(
        &nodes,
        server.processors.max(1),
        server.memory,
        server.node.as_deref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, used_vcpus: i64, used_memory_mb: i64) -> NodeLoad {
        NodeLoad {
            id: id.into(),
            vcpus: 4,
            memory_mb: 8192,
            used_vcpus,
            used_memory_mb,
        }
    }

    #[test]
    fn the_previous_node_first_then_the_least_loaded() {
        let nodes = [node("a", 2, 4096), node("b", 1, 1024), node("c", 1, 1024)];
        assert_eq!(
            pick(&nodes, 1, 512, Some("a")).unwrap().as_deref(),
            Some("a")
        );
        assert_eq!(pick(&nodes, 1, 512, None).unwrap().as_deref(), Some("b"));
        assert_eq!(
            pick(&nodes, 1, 512, Some("gone")).unwrap().as_deref(),
            Some("b")
        );
        assert_eq!(pick(&[], 1, 512, Some("a")).unwrap(), None);
    }

    #[test]
    fn memory_is_not_overcommitted_and_processors_four_times() {
        let full = [node("a", 2, 7680), node("b", 16, 0)];
        // a has 512 MiB left: enough for 512, not for 1024; b has no processor left.
        assert_eq!(pick(&full, 1, 512, None).unwrap().as_deref(), Some("a"));
        let err = pick(&full, 1, 1024, Some("a")).unwrap_err();
        assert_eq!(err.code(), "CONFLICT");
        assert!(err.to_string().contains("512 MiB"), "{err}");
        assert_eq!(
            pick(&[node("b", 15, 0)], 1, 512, None).unwrap().as_deref(),
            Some("b")
        );
        let unknown = NodeLoad {
            vcpus: 0,
            memory_mb: 0,
            ..node("u", 40, 100_000)
        };
        assert_eq!(
            pick(&[unknown], 1, 512, None).unwrap().as_deref(),
            Some("u")
        );
    }
}
