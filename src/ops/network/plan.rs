//! Tenant networks from the operation layer's side: what should exist on this node, read
//! from the database into a [`NetworkPlan`] for the network engine, and when to apply it.
//!
//! A node's plan is the VLANs of the servers whose VM it runs (starting, running or
//! stopping here), each with those servers' NICs (and their firewall templates), and their
//! port forwards. It is applied
//! before a VM starts (its tap must exist), after one ends, when port forwards change, at
//! startup (which also rebuilds the firewall from the database), and every
//! [`RESYNC_INTERVAL`] (changes made through another node, and a check for anything that
//! drifted). Applies go through this node's [`Applier`]: one at a time, each reading the plan
//! when it begins, so that changes made at once share an apply (issue 23).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use tokio_util::sync::CancellationToken;

use super::firewall;
use crate::db::now_ms;
use crate::error::{ApiError, ApiResult};
use crate::network::{self, Forward, Mode, NetworkPlan, Nic, Tunnel, VlanNet};
use crate::ops::server_status::ServerStatus;
use crate::ops::state::AppState;

pub const RESYNC_INTERVAL: Duration = Duration::from_secs(10);

/// `(server id, uuid, name, address, VLAN id, subnet, firewall template)` of each NIC that
/// should be up here.
type NicRow = (i64, String, String, String, i64, String, Option<i64>);

/// What should exist on this node.
pub async fn plan(state: &AppState) -> ApiResult<NetworkPlan> {
    let mut conn = state.db.pool().acquire().await?;
    let rows: Vec<NicRow> = sqlx::query_as(
        "SELECT s.id, s.uuid, s.name, s.ipv4, v.id, v.subnet, s.firewall_template_id \
         FROM servers s \
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
    let template_ids = rows.iter().filter_map(|r| r.6).collect();
    let templates = firewall::templates(&mut conn, &template_ids).await?;
    let mut vlans: BTreeMap<i64, VlanNet> = BTreeMap::new();
    for (server_id, uuid, name, address, vlan_id, subnet, template_id) in rows {
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
                remote_nics: Vec::new(),
            })
            .nics
            .push(Nic {
                server_id,
                mac: mac_address(&uuid),
                address,
                hostname: network::hostname(&name, server_id),
                firewall: template_id.and_then(|id| templates.get(&id).cloned()),
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
    if tunnel.is_some() {
        add_remote_nics(&mut conn, state, &mut vlans).await?;
    }
    let platform = platform_addresses(&mut conn, state).await?;
    Ok(NetworkPlan {
        vlans: vlans.into_values().collect(),
        forwards,
        tunnel,
        platform,
    })
}

/// The NICs of this node's VLANs that are not up here: the MAC and address pairs the VLAN's
/// tunnel lets in. A server's MAC and address are its own whether it runs or not (and each
/// node's taps let only their NIC's own pair in), so every server of the VLAN not running here
/// is named, and a server starting on another node is heard at once, not at the next resync.
async fn add_remote_nics(
    conn: &mut sqlx::AnyConnection,
    state: &AppState,
    vlans: &mut BTreeMap<i64, VlanNet>,
) -> ApiResult<()> {
    let rows: Vec<(i64, String, String, String, i64)> = sqlx::query_as(
        "SELECT s.id, s.uuid, s.name, s.ipv4, s.vlan_id FROM servers s \
         WHERE s.ipv4 IS NOT NULL AND s.vlan_id IN (SELECT h.vlan_id FROM servers h \
         WHERE h.node = $1 AND h.status IN ($2, $3, $4) AND h.vlan_id IS NOT NULL) \
         ORDER BY s.id",
    )
    .bind(state.jobs.node_id())
    .bind(ServerStatus::Starting.code())
    .bind(ServerStatus::Running.code())
    .bind(ServerStatus::Stopping.code())
    .fetch_all(conn)
    .await?;
    for (server_id, uuid, name, address, vlan_id) in rows {
        let (Some(vlan), Ok(address)) = (vlans.get_mut(&vlan_id), address.parse::<Ipv4Addr>())
        else {
            continue;
        };
        if vlan.nics.iter().any(|n| n.server_id == server_id) {
            continue;
        }
        vlan.remote_nics.push(Nic {
            server_id,
            mac: mac_address(&uuid),
            address,
            hostname: network::hostname(&name, server_id),
            firewall: None,
        });
    }
    Ok(())
}

/// The addresses the platform uses, which guests never reach: every node's API (its
/// `--node-url` or listener) and tunnel address, this node's listener, the database's host and
/// Ceph's monitors and OSDs (from the cluster's maps, and the monitors of `ceph.conf` too, in
/// case the cluster does not answer). Names are resolved (IPv4); one that does not resolve is
/// logged and left out.
async fn platform_addresses(
    conn: &mut sqlx::AnyConnection,
    state: &AppState,
) -> ApiResult<Vec<Ipv4Addr>> {
    let nodes: Vec<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT address, tunnel_address FROM nodes")
            .fetch_all(conn)
            .await?;
    let mut hosts: Vec<String> = Vec::new();
    for (address, tunnel) in nodes {
        hosts.extend(address.as_deref().and_then(url_host));
        hosts.extend(tunnel);
    }
    let config = &state.config;
    hosts.extend(config.node_url.as_deref().and_then(url_host));
    hosts.extend(listen_host(&config.listen));
    hosts.extend(url_host(&config.db.database_url()));
    if config.storage.backend == crate::config::StorageBackend::Rbd {
        let conf = config
            .storage
            .ceph_conf
            .clone()
            .unwrap_or_else(|| "/etc/ceph/ceph.conf".into());
        match tokio::fs::read_to_string(&conf).await {
            Ok(text) => hosts.extend(ceph_monitors(&text)),
            Err(err) => tracing::warn!(
                conf = %conf.display(), error = %err,
                "reading Ceph's monitors for the guests' deny list"
            ),
        }
    }
    hosts.sort();
    hosts.dedup();
    let mut addresses = storage_services(state).await;
    for host in hosts {
        addresses.extend(resolve(&host).await);
    }
    addresses.sort();
    addresses.dedup();
    Ok(addresses)
}

/// The IPv4 addresses of the storage's own services (Ceph's daemons); none, logged, when
/// they cannot be read.
async fn storage_services(state: &AppState) -> Vec<Ipv4Addr> {
    let storage = state.storage.clone();
    match tokio::task::spawn_blocking(move || storage.service_addresses()).await {
        Ok(Ok(found)) => found
            .into_iter()
            .filter_map(|ip| match ip {
                std::net::IpAddr::V4(v4) => Some(v4),
                std::net::IpAddr::V6(_) => None,
            })
            .collect(),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "reading the storage's addresses for the guests' deny list");
            Vec::new()
        }
        Err(err) => {
            tracing::warn!(error = %err, "reading the storage's addresses");
            Vec::new()
        }
    }
}

/// The host of a network URL (`postgres://u@db.example:5432/x`, `http://10.0.0.5:8080`);
/// none for other schemes (SQLite's `sqlite://./data/x.db` names a file, not a host).
fn url_host(text: &str) -> Option<String> {
    let url = url::Url::parse(text).ok()?;
    if !["http", "https", "postgres", "postgresql"].contains(&url.scheme()) {
        return None;
    }
    match url.host()? {
        url::Host::Domain(name) if !name.is_empty() => Some(name.to_string()),
        url::Host::Ipv4(ip) => Some(ip.to_string()),
        _ => None,
    }
}

/// The host of a listen address (`10.0.0.5:8080`, `api.example:8080`).
fn listen_host(listen: &str) -> Option<String> {
    let (host, _) = listen.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| host.to_string())
}

/// The monitors' hosts of a Ceph configuration: the values of `mon host` / `mon_host` and of
/// `mon addr` / `mon_addr` (`[v2:10.0.0.1:3300,v1:10.0.0.1:6789]`, `10.0.0.1,10.0.0.2:6789`,
/// `mon1.example`).
fn ceph_monitors(conf: &str) -> Vec<String> {
    let mut hosts = Vec::new();
    for line in conf.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim().replace(['_', ' '], "");
        if key != "monhost" && key != "monaddr" {
            continue;
        }
        let value = value.split(['#', ';']).next().unwrap_or("");
        for part in value.split([',', ' ', '[', ']']) {
            let part = part.trim();
            let part = part
                .strip_prefix("v1:")
                .or_else(|| part.strip_prefix("v2:"))
                .unwrap_or(part);
            // `HOST:PORT/NONCE` or `HOST:PORT` or `HOST`.
            let part = part.split('/').next().unwrap_or("");
            let host = part.split(':').next().unwrap_or("");
            if !host.is_empty() {
                hosts.push(host.to_string());
            }
        }
    }
    hosts
}

/// A host's IPv4 addresses; nothing (logged) when the name does not resolve in 2 s.
async fn resolve(host: &str) -> Vec<Ipv4Addr> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return vec![ip];
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Vec::new();
    }
    let lookup = tokio::net::lookup_host((host, 0));
    match tokio::time::timeout(Duration::from_secs(2), lookup).await {
        Ok(Ok(found)) => found
            .filter_map(|a| match a.ip() {
                std::net::IpAddr::V4(ip) => Some(ip),
                std::net::IpAddr::V6(_) => None,
            })
            .collect(),
        _ => {
            tracing::warn!(
                host,
                "a platform host does not resolve: guests are not kept from it"
            );
            Vec::new()
        }
    }
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

/// How long an apply waits for changes announced before it (their transactions under way)
/// to be committed, so that it takes them in: a burst of changes makes a few applies, not one
/// each. A change alone waits for nothing.
pub const COALESCE_WAIT: Duration = Duration::from_millis(250);

/// This node's applies of its network plan: one at a time, run by one task, each reading
/// the plan when it begins and so taking in every change committed before (issue 23). A
/// caller returns once an apply that began after its change has ended: its change is in the
/// kernel (or the apply's error is its error).
#[derive(Default)]
pub struct Applier {
    queue: std::sync::Mutex<Queue>,
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct Queue {
    /// Changes whose transactions are under way ([`Applier::announce`]).
    announced: usize,
    /// Applies asked for, and the last one an ended apply took in.
    requested: u64,
    completed: u64,
    /// Whether the next apply is a resync (a check of the whole host).
    resync: bool,
    running: bool,
    /// Why the last apply failed, if it did (and whether the database was out of reach).
    failed: Option<(String, bool)>,
}

/// A change under way: the next apply waits (at most [`COALESCE_WAIT`]) for it to be
/// committed and asked for ([`Announced::apply`]), or dropped.
pub struct Announced<'a> {
    applier: &'a Applier,
    open: bool,
}

impl Announced<'_> {
    /// The change is committed: returns once it is applied (when `node` is this node;
    /// another node's resync picks it up there).
    pub async fn apply(mut self, state: &AppState, node: Option<&str>) -> ApiResult<()> {
        self.open = false;
        let ours = node == Some(state.jobs.node_id()) && state.network.mode() == Mode::Bridged;
        self.applier.request(state, false, ours, 1).await
    }
}

impl Drop for Announced<'_> {
    fn drop(&mut self) {
        if self.open {
            self.applier.lock().announced -= 1;
            self.applier.changed.notify_waiters();
        }
    }
}

impl Applier {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Says a change of this node's plan is about to be made (call before its transaction).
    pub fn announce(&self) -> Announced<'_> {
        self.lock().announced += 1;
        Announced {
            applier: self,
            open: true,
        }
    }

    /// Asks for an apply (`want`; else only ends an announcement) and waits for one that
    /// began after this call to end.
    async fn request(
        &self,
        state: &AppState,
        resync: bool,
        want: bool,
        announced: usize,
    ) -> ApiResult<()> {
        let ticket = {
            let mut q = self.lock();
            q.announced -= announced;
            if !want {
                drop(q);
                self.changed.notify_waiters();
                return Ok(());
            }
            q.requested += 1;
            q.resync |= resync;
            if !q.running {
                q.running = true;
                // Its own task: a caller that goes away never leaves an apply half-done.
                tokio::spawn(drive(state.clone()));
            }
            q.requested
        };
        self.changed.notify_waiters();
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let q = self.lock();
                if q.completed >= ticket {
                    return match &q.failed {
                        None => Ok(()),
                        Some((err, true)) => {
                            Err(ApiError::DatabaseUnavailable(anyhow::anyhow!("{err}")))
                        }
                        Some((err, false)) => Err(ApiError::Internal(anyhow::anyhow!("{err}"))),
                    };
                }
            }
            changed.await;
        }
    }
}

/// The applier's task: applies until no apply is asked for.
async fn drive(state: AppState) {
    let applier = &state.network_applier;
    loop {
        // Changes under way first, for a bounded time.
        let deadline = tokio::time::Instant::now() + COALESCE_WAIT;
        loop {
            let changed = applier.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if applier.lock().announced == 0 {
                break;
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let (target, resync) = {
            let mut q = applier.lock();
            if q.completed == q.requested {
                q.running = false;
                return;
            }
            (q.requested, std::mem::take(&mut q.resync))
        };
        let failed = apply_once(&state, resync).await.err().map(|e| {
            let unavailable = e.is_database_unavailable();
            // The cause, which each waiting caller's error carries (and logs).
            let cause = match e {
                ApiError::Internal(cause) | ApiError::DatabaseUnavailable(cause) => {
                    format!("{cause:#}")
                }
                other => other.to_string(),
            };
            (cause, unavailable)
        });
        {
            let mut q = applier.lock();
            q.completed = target;
            q.failed = failed;
        }
        applier.changed.notify_waiters();
    }
}

/// Reads the plan and applies it (a resync also checks the whole host).
async fn apply_once(state: &AppState, resync: bool) -> ApiResult<()> {
    let plan = plan(state).await?;
    let network = state.network.clone();
    let metrics = &crate::metrics::METRICS;
    if resync {
        metrics.network_applies.with_label_values(&["resync"]).inc();
        let drift = tokio::task::spawn_blocking(move || network.resync(&plan)).await??;
        if !drift.is_empty() {
            metrics.network_drifts.inc();
        }
    } else {
        metrics.network_applies.with_label_values(&["change"]).inc();
        tokio::task::spawn_blocking(move || network.apply(&plan)).await??;
    }
    Ok(())
}

/// Makes this node's networks what the database says (only what changed is touched).
pub async fn sync(state: &AppState) -> ApiResult<()> {
    if state.network.mode() != Mode::Bridged {
        return Ok(());
    }
    state.network_applier.request(state, false, true, 0).await
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

/// Resyncs every [`RESYNC_INTERVAL`] until `stop`: applies what changed through other
/// nodes, and checks the host still holds what was applied (writing it all again if not).
pub async fn resync(state: AppState, stop: CancellationToken) {
    if state.network.mode() != Mode::Bridged {
        return;
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RESYNC_INTERVAL) => {
                if let Err(err) = state.network_applier.request(&state, true, true, 0).await {
                    tracing::error!(error = %err, "resyncing this node's tenant networks failed");
                }
            }
        }
    }
}

/// A stable, locally administered MAC address derived from the server's uuid.
pub fn mac_address(server_uuid: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(server_uuid.as_bytes());
    format!("52:54:00:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_hosts_are_read_from_urls_listeners_and_ceph_conf() {
        assert_eq!(
            url_host("postgres://u:p@db.example:5432/x").as_deref(),
            Some("db.example")
        );
        assert_eq!(
            url_host("http://10.0.0.5:8080/").as_deref(),
            Some("10.0.0.5")
        );
        assert_eq!(url_host("sqlite:///var/lib/x.db"), None);
        assert_eq!(url_host("sqlite://./data/extility.db?mode=rwc"), None);
        assert_eq!(url_host("sqlite://data/extility.db?mode=rwc"), None);
        assert_eq!(listen_host("10.0.0.5:8080").as_deref(), Some("10.0.0.5"));
        assert_eq!(listen_host("[::]:8080").as_deref(), Some("::"));
        let conf = "[global]\nfsid = x\nmon_host = [v2:10.1.0.1:3300/0,v1:10.1.0.1:6789/0] \
                    10.1.0.2:6789,mon3.example ; three\n[mon.a]\n  mon addr = 10.1.0.4\n\
                    osd host = 10.9.9.9\n";
        assert_eq!(
            ceph_monitors(conf),
            [
                "10.1.0.1",
                "10.1.0.1",
                "10.1.0.2",
                "mon3.example",
                "10.1.0.4"
            ]
        );
    }

    #[tokio::test]
    async fn names_resolve_to_ipv4_only() {
        assert_eq!(resolve("10.2.3.4").await, [Ipv4Addr::new(10, 2, 3, 4)]);
        assert!(resolve("::1").await.is_empty());
        assert!(resolve("localhost").await.contains(&Ipv4Addr::LOCALHOST));
    }
}
