//! Tenant networks from the operation layer's side: what should exist on this node, read
//! from the database into a [`NetworkPlan`] for the network engine, and when to apply it.
//!
//! A node's plan is the VLANs of the servers whose VM it runs (starting, running or
//! stopping here), each with those servers' NICs, and their port forwards. It is applied
//! before a VM starts (its tap must exist), after one ends, when port forwards change, at
//! startup (which also rebuilds the firewall from the database), and every
//! [`RESYNC_INTERVAL`] (changes made through another node, and anything that drifted).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use tokio_util::sync::CancellationToken;

use super::server::{ServerStatus, mac_address};
use crate::db::now_ms;
use crate::error::ApiResult;
use crate::network::{self, Forward, Mode, NetworkPlan, Nic, Tunnel, VlanNet};
use crate::state::AppState;

pub const RESYNC_INTERVAL: Duration = Duration::from_secs(10);

/// `(server id, uuid, name, address, VLAN id, subnet)` of each NIC that should be up here.
type NicRow = (i64, String, String, String, i64, String);

/// What should exist on this node.
pub async fn plan(state: &AppState) -> ApiResult<NetworkPlan> {
    let mut conn = state.db.pool().acquire().await?;
    let rows: Vec<NicRow> = sqlx::query_as(
        "SELECT s.id, s.uuid, s.name, s.ipv4, v.id, v.subnet FROM servers s \
         JOIN vlans v ON v.id = s.vlan_id \
         WHERE s.node = $1 AND s.status IN ($2, $3, $4) \
         AND s.ipv4 IS NOT NULL AND v.subnet IS NOT NULL ORDER BY s.id",
    )
    .bind(state.jobs.node_id())
    .bind(ServerStatus::Starting.code())
    .bind(ServerStatus::Running.code())
    .bind(ServerStatus::Stopping.code())
    .fetch_all(&mut *conn)
    .await?;
    let mut vlans: BTreeMap<i64, VlanNet> = BTreeMap::new();
    for (server_id, uuid, name, address, vlan_id, subnet) in rows {
        let (Ok(address), Ok(subnet)) = (address.parse::<Ipv4Addr>(), subnet.parse::<Ipv4Net>())
        else {
            tracing::error!(
                server_id,
                vlan_id,
                "a server's address or its VLAN's subnet is unreadable"
            );
            continue;
        };
        vlans
            .entry(vlan_id)
            .or_insert_with(|| VlanNet {
                vlan_id,
                subnet,
                nics: Vec::new(),
            })
            .nics
            .push(Nic {
                server_id,
                mac: mac_address(&uuid),
                address,
                hostname: network::hostname(&name, server_id),
            });
    }
    let forwards: Vec<(i64, i64, String)> = sqlx::query_as(
        "SELECT f.host_port, f.guest_port, s.ipv4 FROM port_forwards f \
         JOIN servers s ON s.id = f.server_id \
         WHERE s.node = $1 AND s.status IN ($2, $3, $4) AND s.ipv4 IS NOT NULL \
         ORDER BY f.host_port",
    )
    .bind(state.jobs.node_id())
    .bind(ServerStatus::Starting.code())
    .bind(ServerStatus::Running.code())
    .bind(ServerStatus::Stopping.code())
    .fetch_all(&mut *conn)
    .await?;
    let forwards = forwards
        .into_iter()
        .filter_map(|(host_port, guest_port, address)| {
            Some(Forward {
                host_port: u16::try_from(host_port).ok()?,
                address: address.parse().ok()?,
                guest_port: u16::try_from(guest_port).ok()?,
            })
        })
        .collect();
    let tunnel = match state.config.network.tunnel_address {
        Some(local) => Some(Tunnel {
            local,
            peers: tunnel_peers(&mut conn, state).await?,
        }),
        None => None,
    };
    Ok(NetworkPlan {
        vlans: vlans.into_values().collect(),
        forwards,
        tunnel,
    })
}

/// The tunnel addresses of the other live nodes that run VMs.
async fn tunnel_peers(
    conn: &mut sqlx::AnyConnection,
    state: &AppState,
) -> ApiResult<Vec<Ipv4Addr>> {
    let alive_since = now_ms() - state.jobs.lease_ms();
    let addresses: Vec<String> = sqlx::query_scalar(
        "SELECT tunnel_address FROM nodes WHERE id <> $1 AND last_seen >= $2 \
         AND can_run_vms = 1 AND tunnel_address IS NOT NULL ORDER BY tunnel_address",
    )
    .bind(state.jobs.node_id())
    .bind(alive_since)
    .fetch_all(conn)
    .await?;
    let mut peers: Vec<Ipv4Addr> = addresses
        .iter()
        .filter_map(|a| a.parse().ok())
        .filter(|a| Some(*a) != state.config.network.tunnel_address)
        .collect();
    peers.dedup();
    Ok(peers)
}

/// Makes this node's networks what the database says.
pub async fn sync(state: &AppState) -> ApiResult<()> {
    if state.network.mode() != Mode::Bridged {
        return Ok(());
    }
    let plan = plan(state).await?;
    let network = state.network.clone();
    tokio::task::spawn_blocking(move || network.apply(&plan)).await??;
    Ok(())
}

/// [`sync`] when `node` (the node running a server) is this one; another node's periodic
/// resync picks the change up there.
pub async fn sync_for(state: &AppState, node: Option<&str>) -> ApiResult<()> {
    if node == Some(state.jobs.node_id()) {
        sync(state).await?;
    }
    Ok(())
}

/// [`sync`] after something that already happened (a VM ended): a failure is logged, and the
/// next resync tries again.
pub async fn sync_logged(state: &AppState) {
    if let Err(err) = sync(state).await {
        tracing::error!(error = %err, "applying this node's tenant networks failed");
    }
}

/// Resyncs every [`RESYNC_INTERVAL`] until `stop`.
pub async fn resync(state: AppState, stop: CancellationToken) {
    if state.network.mode() != Mode::Bridged {
        return;
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RESYNC_INTERVAL) => sync_logged(&state).await,
        }
    }
}
