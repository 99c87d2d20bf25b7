//! The nodes of a cluster as an operator sees them (`extility nodes`): what each offers (the
//! job queue records it when the node starts, `crate::jobs::queue::node_started`), whether it
//! is alive, and the load of the servers it runs. Reads only.

use crate::db::{Db, now_ms};
use crate::error::ApiResult;
use crate::ops::server_status::ServerStatus;

/// One node, with its load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: String,
    pub address: Option<String>,
    /// Its address for VXLAN between nodes (`--tunnel-address`), if it set one.
    pub tunnel_address: Option<String>,
    pub version: Option<String>,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub can_run_vms: bool,
    /// Whether its heartbeat is recent (within the job lease).
    pub alive: bool,
    /// Milliseconds since its last heartbeat.
    pub last_seen_ago_ms: i64,
    /// Servers running, starting or stopping on it (what placement counts), and the
    /// processors and memory they were given.
    pub servers: i64,
    pub used_vcpus: i64,
    pub used_memory_mb: i64,
}

type NodeRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
);

/// Every node the cluster has seen, by id. A node is alive when its last heartbeat is at
/// most `lease_ms` old (as the job queue judges it).
pub async fn list_nodes(db: &Db, lease_ms: i64) -> ApiResult<Vec<NodeStatus>> {
    let rows: Vec<NodeRow> = sqlx::query_as(
        "SELECT n.id, n.address, n.tunnel_address, n.version, n.vcpus, n.memory_mb, n.can_run_vms, n.last_seen, \
         (SELECT COUNT(*) FROM servers s WHERE s.node = n.id AND s.status IN ($1, $2, $3)), \
         (SELECT CAST(COALESCE(SUM(s.processors), 0) AS BIGINT) FROM servers s \
           WHERE s.node = n.id AND s.status IN ($1, $2, $3)), \
         (SELECT CAST(COALESCE(SUM(s.memory), 0) AS BIGINT) FROM servers s \
           WHERE s.node = n.id AND s.status IN ($1, $2, $3)) \
         FROM nodes n ORDER BY n.id",
    )
    .bind(ServerStatus::HOLDING_A_NODE[0])
    .bind(ServerStatus::HOLDING_A_NODE[1])
    .bind(ServerStatus::HOLDING_A_NODE[2])
    .fetch_all(db.pool())
    .await?;
    let now = now_ms();
    Ok(rows
        .into_iter()
        .map(
            |(
                id,
                address,
                tunnel,
                version,
                vcpus,
                memory_mb,
                vms,
                last_seen,
                servers,
                cpu,
                mem,
            )| {
                NodeStatus {
                    id,
                    address,
                    tunnel_address: tunnel,
                    version,
                    vcpus,
                    memory_mb,
                    can_run_vms: vms != 0,
                    alive: now - last_seen <= lease_ms,
                    last_seen_ago_ms: (now - last_seen).max(0),
                    servers,
                    used_vcpus: cpu,
                    used_memory_mb: mem,
                }
            },
        )
        .collect())
}

/// The table `extility nodes` prints.
pub fn render_table(nodes: &[NodeStatus]) -> String {
    let mut out = format!(
        "{:<40} {:<8} {:<24} {:>9} {:>13} {:>7} {:>10}  {}\n",
        "NODE", "STATE", "ADDRESS", "VCPUS", "MEMORY MiB", "SERVERS", "HEARTBEAT", "VERSION"
    );
    for n in nodes {
        let state = match (n.alive, n.can_run_vms) {
            (false, _) => "down",
            (true, true) => "up",
            (true, false) => "up-novm",
        };
        out.push_str(&format!(
            "{:<40} {:<8} {:<24} {:>9} {:>13} {:>7} {:>9}s  {}\n",
            n.id,
            state,
            n.address.as_deref().unwrap_or("-"),
            format!("{}/{}", n.used_vcpus, n.vcpus),
            format!("{}/{}", n.used_memory_mb, n.memory_mb),
            n.servers,
            n.last_seen_ago_ms / 1000,
            n.version.as_deref().unwrap_or("-"),
        ));
    }
    out
}
