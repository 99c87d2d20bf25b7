//! Building and running a serving node.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::config::{
    Config, HypervisorKind, NetworkMode, OnOff, QemuAccel, StorageArgs, StorageBackend,
};
use crate::db::Db;
use crate::fetch::FetchTls;
use crate::hypervisor::qemu::{self, Accel, Qemu, QemuConfig};
use crate::hypervisor::{Hypervisor, VmEvent, none::RecordOnly};
use crate::jobs::identity::{self, NodeLock};
use crate::jobs::{ConcurrencyLimits, JobQueue, NodeInfo, QueueConfig, worker};
use crate::network::linux::{BridgeConfig, LinuxBridges};
use crate::network::{Mode, Network, UserConfined};
use crate::ops::accounts::credentials::CredentialCache;
use crate::ops::accounts::quota::{Limits, QuotaName};
use crate::ops::accounts::throttle::LoginLimits;
use crate::ops::audit::AuditLog;
use crate::ops::inflight::CallsInFlight;
use crate::ops::state::{AppState, Inner};
use crate::ops::{self, jobs::job, server, storage::catalogue};
use crate::size::parse_size;
use crate::storage::files::FileStorage;
use crate::storage::rbd::{RbdConfig, RbdStorage};
use crate::storage::{Storage, orphans};

pub struct Application {
    listener: TcpListener,
    /// Where guests' connections to 169.254.169.254:80 arrive (tenant networks only).
    metadata_listener: Option<TcpListener>,
    state: AppState,
    vm_events: mpsc::UnboundedReceiver<VmEvent>,
    /// This process's hold on its node id, for as long as it serves.
    node_lock: NodeLock,
}

/// Opens the database named by the configuration, migrated.
pub async fn open_database(data_dir: &Path, url: &str) -> anyhow::Result<Db> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let db = Db::connect(url).await?;
    db.migrate().await?;
    Ok(db)
}

/// Opens an existing database as it is, for commands that only read (`extility nodes`): never
/// creates one (a mistyped --data-dir must not leave a new database behind) nor migrates it.
pub async fn open_existing_database(url: &str) -> anyhow::Result<Db> {
    if let Some(file) = crate::db::sqlite_file(url) {
        anyhow::ensure!(
            file.exists(),
            "there is no database at {} (is --data-dir right? `extility serve` or `extility \
             migrate` makes one)",
            file.display()
        );
    }
    Db::connect(&url.replace("mode=rwc", "mode=ro")).await
}

/// Reads a value kept in a file of the data directory, creating it on first use.
fn kept_in_file(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(value) if !value.trim().is_empty() => Ok(value.trim().to_string()),
        _ => {
            let value = make();
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("writing {}", path.display()))?;
            writeln!(file, "{value}")?;
            Ok(value)
        }
    }
}

/// The key sealing job secrets: `EXTILITY_SECRET_KEY` (64 hex digits, the same on every node
/// sharing a database), else a random key kept in `<data-dir>/secret.key`.
fn secret_key(data_dir: &Path) -> anyhow::Result<[u8; 32]> {
    let hex_key = match std::env::var("EXTILITY_SECRET_KEY") {
        Ok(key) => key,
        Err(_) => kept_in_file(&data_dir.join("secret.key"), || {
            hex::encode(rand::random::<[u8; 32]>())
        })?,
    };
    let bytes = hex::decode(hex_key.trim()).context("the secret key must be hex")?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("the secret key must be 32 bytes (64 hex digits)"))
}

/// The storage backend the flags choose. RBD must answer now: a node that cannot reach its
/// volumes should not take jobs.
fn storage(config: &Config, data_dir: &Path) -> anyhow::Result<Arc<dyn Storage>> {
    open_storage(&config.storage, data_dir)
}

/// The storage backend `args` name, for `serve` and for the commands that read volumes.
pub fn open_storage(args: &StorageArgs, data_dir: &Path) -> anyhow::Result<Arc<dyn Storage>> {
    Ok(match args.backend {
        StorageBackend::Files => Arc::new(FileStorage::open(data_dir)?),
        StorageBackend::Rbd => {
            let rbd = RbdConfig {
                pool: args
                    .rbd_pool
                    .clone()
                    .context("--storage rbd needs --rbd-pool")?,
                ceph_conf: args.ceph_conf.clone(),
                ceph_user: args.ceph_user.clone(),
            };
            let pool = rbd.pool.clone();
            Arc::new(
                RbdStorage::open(rbd, data_dir)
                    .with_context(|| format!("opening the RBD pool {pool}"))?,
            )
        }
    })
}

fn hypervisor(
    config: &Config,
    events: mpsc::UnboundedSender<VmEvent>,
) -> anyhow::Result<Arc<dyn Hypervisor>> {
    let binary = match config.hypervisor {
        HypervisorKind::None => None,
        HypervisorKind::Qemu => Some(
            qemu::find_binary()
                .with_context(|| format!("--hypervisor qemu: {} is not on PATH", qemu::BINARY))?,
        ),
        HypervisorKind::Auto => {
            let found = qemu::find_binary();
            if found.is_none() {
                tracing::warn!("{} is not on PATH", qemu::BINARY);
            }
            found
        }
    };
    let Some(binary) = binary else {
        tracing::warn!("hypervisor 'none': server state is only recorded, no VM runs");
        return Ok(Arc::new(RecordOnly::default()));
    };
    let accel = match config.qemu_accel {
        QemuAccel::Kvm => Accel::Kvm,
        QemuAccel::Tcg => Accel::Tcg,
        QemuAccel::Auto if qemu::kvm_usable() => Accel::Kvm,
        QemuAccel::Auto => {
            tracing::warn!("/dev/kvm is not usable: VMs run on QEMU's (slower) TCG emulator");
            Accel::Tcg
        }
    };
    let confinement = if rustix::process::geteuid().is_root() {
        let cgroups = match qemu::confine::cgroups_available() {
            Ok(()) => true,
            Err(why) => {
                tracing::warn!(reason = %why, "VMs get no cgroup of their own: no memory, CPU or I/O limit");
                false
            }
        };
        // The VMs' users must not read the database, the secret key or any volume (QEMU gets
        // descriptors of what it needs).
        qemu::confine::make_private(&config.db.data_dir)
            .with_context(|| format!("making {} private", config.db.data_dir.display()))?;
        Some(qemu::confine::Confinement {
            run_dir: config.vm_run_dir.clone(),
            uids: config.vm_uids,
            cgroups,
            ceph: config
                .storage
                .ceph_vm_user
                .clone()
                .zip(config.storage.ceph_vm_keyring.clone()),
        })
    } else {
        tracing::warn!(
            "not running as root: VMs run as this process's user, without a user or cgroup of \
             their own (QEMU's sandbox still applies)"
        );
        None
    };
    let driver = Qemu::new(
        QemuConfig {
            binary,
            vms_dir: qemu::vms_dir(&config.db.data_dir),
            accel,
            shutdown_timeout: Duration::from_secs(config.vm_shutdown_timeout),
            confinement,
        },
        events,
    )?;
    tracing::info!(
        binary = %driver.config().binary.display(),
        accel = accel.as_str(),
        vms = %driver.config().vms_dir.display(),
        "hypervisor 'qemu'"
    );
    Ok(Arc::new(driver))
}

/// The network engine `--network` asks for: bridges when this process can manage them (or
/// must), else QEMU's confined user-mode network, saying so.
fn network(config: &Config, node_id: &str) -> anyhow::Result<Arc<dyn Network>> {
    let args = &config.network;
    let unavailable = match args.mode {
        NetworkMode::User => Some("--network user".to_string()),
        NetworkMode::Bridge | NetworkMode::Auto => LinuxBridges::unavailable(),
    };
    if let Some(why) = unavailable {
        if args.mode == NetworkMode::Bridge {
            anyhow::bail!("--network bridge: {why}");
        }
        tracing::warn!(
            reason = %why,
            metadata = %format!("http://{}:{}", qemu::METADATA_GUEST_ADDR, qemu::METADATA_GUEST_PORT),
            "guests get confined user-mode networking: DHCP and the metadata service only; \
             no egress, no DNS, nothing of this host's loopback or networks, no VLAN between them"
        );
        return Ok(Arc::new(UserConfined));
    }
    let bridges = LinuxBridges::new(BridgeConfig {
        // The node's own: nodes sharing a data directory each run their own dnsmasq daemons;
        // out of the data directory, whose parents may be private to root.
        state_dir: network_run_dir(&args.network_run_dir, &config.db.data_dir, node_id),
        // Where earlier releases kept them: their daemons are stopped and started anew.
        legacy_state_dir: config.db.data_dir.join("network").join(node_id),
        metadata_port: args.metadata_port,
        egress: args.guest_egress == OnOff::On,
        pool: args.vlan_subnets,
        deny: args.guest_deny.clone(),
    })?;
    tracing::info!(
        pool = %args.vlan_subnets,
        egress = args.guest_egress == OnOff::On,
        metadata_port = args.metadata_port,
        "tenant networks: a bridge per VLAN, a tap per NIC, DHCP and DNS by dnsmasq, \
         nftables tables 'extility'"
    );
    Ok(Arc::new(bridges))
}

/// `<network-run-dir>/<8 hex digits of the SHA-256 of the data directory's path>/<node id>`:
/// servers sharing a host (nodes of a test, say) keep apart their dnsmasq files.
fn network_run_dir(root: &Path, data_dir: &Path, node_id: &str) -> std::path::PathBuf {
    use sha2::Digest;
    let path = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    let digest = sha2::Sha256::digest(path.as_os_str().as_encoded_bytes());
    root.join(hex::encode(&digest[..4])).join(node_id)
}

/// A quota's value as the `--quota-*` flags and `extility customer set-quota` take it:
/// `unlimited` (or -1) for no limit, else a size for storage (`500G`, `2T`), a size or a
/// number of MiB for memory (`64G`, `65536`), and a whole number for the others.
pub fn parse_quota(quota: QuotaName, text: &str) -> Result<Option<i64>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("unlimited") || text == "-1" {
        return Ok(None);
    }
    let number = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let not_a_number = || format!("'{text}' is not a whole number (or unlimited)");
    let value: u64 = match quota {
        QuotaName::StorageBytes => parse_size(text)?,
        QuotaName::RunningMemoryMb if number => text.parse().map_err(|_| not_a_number())?,
        QuotaName::RunningMemoryMb => parse_size(text)? >> 20,
        _ => text.parse().map_err(|_| not_a_number())?,
    };
    i64::try_from(value)
        .map(Some)
        .map_err(|_| format!("'{text}' is too large"))
}

/// The quotas of customers without limits of their own, from the `--quota-*` flags.
fn quota_defaults(config: &Config) -> anyhow::Result<Limits> {
    let mut limits = Limits::default();
    for (quota, flag, text) in [
        (
            QuotaName::StorageBytes,
            "--quota-storage-bytes",
            &config.quota_storage_bytes,
        ),
        (QuotaName::Servers, "--quota-servers", &config.quota_servers),
        (
            QuotaName::RunningVcpus,
            "--quota-running-vcpus",
            &config.quota_running_vcpus,
        ),
        (
            QuotaName::RunningMemoryMb,
            "--quota-running-memory",
            &config.quota_running_memory,
        ),
        (
            QuotaName::ConcurrentJobs,
            "--quota-concurrent-jobs",
            &config.quota_concurrent_jobs,
        ),
        (QuotaName::Vlans, "--quota-vlans", &config.quota_vlans),
        (
            QuotaName::PortForwards,
            "--quota-port-forwards",
            &config.quota_port_forwards,
        ),
        (
            QuotaName::FirewallTemplates,
            "--quota-firewall-templates",
            &config.quota_firewall_templates,
        ),
        (
            QuotaName::FirewallRules,
            "--quota-firewall-rules",
            &config.quota_firewall_rules,
        ),
    ] {
        let limit = parse_quota(quota, text).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
        limits.set(quota, limit);
    }
    Ok(limits)
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // First, so that a bad CA file or value stops the server before it touches anything.
        let fetch_tls = FetchTls::load(&config.fetch_ca_files)?;
        let quota_defaults = quota_defaults(&config)?;
        let min_free_space = parse_size(&config.min_free_space)
            .map_err(|e| anyhow::anyhow!("--min-free-space: {e}"))?;
        // Before anything is written: a port in use stops the server with nothing made.
        let listener = TcpListener::bind(&config.listen).await.with_context(|| {
            format!(
                "listening on {} (another program has the port? choose another with --listen \
                 HOST:PORT)",
                config.listen
            )
        })?;
        let local_url = format!("http://{}", listener.local_addr()?);
        let data_dir = config.db.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
        let node_id = match &config.node_id {
            Some(id) => id.clone(),
            None => kept_in_file(&data_dir.join("node-id"), || {
                format!("node-{}", uuid::Uuid::new_v4())
            })?,
        };
        let node_lock = NodeLock::take(
            &data_dir,
            &node_id,
            &format!("pid {}, listening on {local_url}", std::process::id()),
        )?;
        let db = open_database(&data_dir, &config.db.database_url()).await?;
        identity::ensure_not_served_elsewhere(&db, &node_id, &node_lock).await?;
        if !config.no_demo && catalogue::demo_catalogue(&db).await? {
            tracing::info!("created the demo catalogue");
        }
        let lease_ms = (config.job_lease_seconds.max(2) * 1000) as i64;
        let storage = storage(&config, &data_dir)?;
        let (events_tx, vm_events) = mpsc::unbounded_channel();
        let hypervisor = hypervisor(&config, events_tx)?;
        let network = network(&config, &node_id)?;
        // Only guests reach it (the firewall drops other connections to its port).
        let metadata_listener = match network.mode() {
            Mode::Bridged => {
                let address = SocketAddr::from(([0, 0, 0, 0], config.network.metadata_port));
                Some(TcpListener::bind(address).await.with_context(|| {
                    format!(
                        "listening for guests' metadata requests on {address} (bridge \
                         networking): free the port, choose another with --metadata-port, or \
                         run without tenant networks with --network user"
                    )
                })?)
            }
            Mode::UserConfined => None,
        };
        let jobs = JobQueue::new(QueueConfig {
            db: db.clone(),
            node_id,
            lease_ms,
            secret_key: secret_key(&data_dir)?,
            limits: ConcurrencyLimits {
                transfers: config.max_fetches.max(1),
                transfers_per_customer: config.max_fetches_per_customer.max(1),
            },
            known_kinds: ops::JOB_KINDS.iter().map(|kind| kind.name).collect(),
        });
        let credentials = CredentialCache::new(LoginLimits {
            failures_per_address: config.login_failures_per_address,
            failures_per_account: config.login_failures_per_account,
            window_seconds: config.login_window_seconds,
            queue: config.login_queue,
            ..LoginLimits::default()
        });
        let audit = AuditLog::start(db.clone());
        let calls_in_flight = CallsInFlight::new(config.max_calls_in_flight);
        let consoles = crate::ops::server::console::OpenConsoles::new(
            config.max_consoles_per_customer,
            config.max_consoles_per_server,
        );
        let state = AppState::new(Inner {
            config,
            db,
            storage,
            hypervisor,
            network,
            jobs,
            credentials,
            audit,
            fetch_tls,
            local_url,
            quota_defaults,
            min_free_space,
            calls_in_flight,
            consoles,
            network_applier: Default::default(),
        });
        Ok(Application {
            listener,
            metadata_listener,
            state,
            vm_events,
            node_lock,
        })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until SIGINT or SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        let Application {
            listener,
            metadata_listener,
            state,
            mut vm_events,
            node_lock,
        } = self;
        recover(&state).await?;

        let shutdown = CancellationToken::new();
        state
            .jobs
            .introduce(&node_info(&state, &node_lock.instance))
            .await?;
        tokio::spawn(server::self_fence::keep_node_alive(
            state.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(orphans::run(
            state.db.clone(),
            state.storage.clone(),
            Duration::from_secs(state.config.orphan_sweep_seconds),
            Duration::from_secs(state.config.orphan_min_age_seconds),
            shutdown.clone(),
        ));
        let workers = worker::spawn_pool(job::worker_pool(&state), shutdown.clone());
        tokio::spawn(ops::network::plan::resync(state.clone(), shutdown.clone()));
        if let Some(listener) = metadata_listener {
            tokio::spawn(api::metadata::serve_guests(
                listener,
                state.clone(),
                shutdown.clone(),
            ));
        }
        let events_state = state.clone();
        tokio::spawn(async move {
            while let Some(event) = vm_events.recv().await {
                if let Err(err) = server::record_vm_event(&events_state, event).await {
                    tracing::error!(error = %err, "recording a VM's state failed");
                }
            }
        });

        println!("extility listening on {}", state.local_url);
        println!("control panel: {}/panel/", state.local_url);
        if !ops::accounts::customer::any_customer(&state.db).await? {
            println!(
                "no customers yet: add one with `extility customer add --email EMAIL \
                 --password-stdin{}`, then sign in to the panel or call the API with it",
                data_dir_flag(&state.config.db.data_dir)
            );
        }
        tracing::info!(
            url = %state.local_url,
            node = %state.jobs.node_id(),
            hypervisor = state.hypervisor.name(),
            "serving"
        );
        // The client's address counts failed logins (`ops::accounts::throttle`) and is what the audit
        // trail records a call as coming from.
        let router = api::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let stop = shutdown.clone();
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                stop.cancel();
            })
            .await?;
        shutdown.cancel();
        let _ = workers.await;
        state.db.close().await;
        Ok(())
    }
}

/// What a restarting node puts right: its running jobs become claimable again, its servers
/// are checked against what really runs, and staged files no running attempt (on another
/// node sharing the folder) owns are removed.
async fn recover(state: &AppState) -> anyhow::Result<()> {
    let released = state.jobs.take_back_own_jobs().await?;
    if released > 0 {
        tracing::info!(jobs = released, "taking back jobs interrupted by a restart");
    }
    server::recover_servers(state).await?;
    // Tenant networks: addresses for servers made before them, then this node's bridges,
    // taps, DHCP and firewall rebuilt from the database (VMs that kept running keep theirs).
    server::assign_missing_addresses(state).await?;
    if let Err(err) = ops::network::plan::sync(state).await {
        tracing::error!(error = %err, "applying this node's tenant networks failed");
    }
    let in_use = state.jobs.staging_names_in_use().await?;
    let storage = state.storage.clone();
    let removed = tokio::task::spawn_blocking(move || {
        storage.sweep_staging(&|name| in_use.iter().any(|attempt| attempt == name))
    })
    .await??;
    if removed > 0 {
        tracing::info!(
            files = removed,
            "removed staged files left by interrupted jobs"
        );
    }
    // Holding folders of backups that died (a running backup's is locked, and kept).
    let data_dir = state.config.db.data_dir.clone();
    tokio::task::spawn_blocking(move || ops::platform::backup::remove_stale_holds(&data_dir))
        .await?;
    Ok(())
}

/// ` --data-dir DIR` when the data directory is not the default, for commands to copy.
fn data_dir_flag(data_dir: &Path) -> String {
    if data_dir == Path::new("./data") {
        String::new()
    } else {
        format!(" --data-dir {}", data_dir.display())
    }
}

/// What this node offers: its address, processors, memory, and whether it runs VMs.
fn node_info(state: &AppState, instance: &str) -> NodeInfo {
    let vcpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    NodeInfo {
        address: state
            .config
            .node_url
            .clone()
            .unwrap_or_else(|| state.local_url.clone()),
        vcpus,
        memory_mb: memory_mb().unwrap_or(0),
        can_run_vms: state.hypervisor.name() != "none",
        tunnel_address: state.config.network.tunnel_address.map(|ip| ip.to_string()),
        instance: instance.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// The host's memory (`MemTotal` of /proc/meminfo), in MiB.
fn memory_mb() -> Option<i64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: i64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_values_are_sizes_numbers_or_unlimited() {
        let parse = parse_quota;
        assert_eq!(parse(QuotaName::StorageBytes, "2T"), Ok(Some(2 << 40)));
        assert_eq!(parse(QuotaName::StorageBytes, "500G"), Ok(Some(500 << 30)));
        assert_eq!(parse(QuotaName::StorageBytes, "4096"), Ok(Some(4096)));
        assert_eq!(parse(QuotaName::Servers, "10"), Ok(Some(10)));
        assert_eq!(parse(QuotaName::Servers, "0"), Ok(Some(0)));
        assert_eq!(parse(QuotaName::RunningMemoryMb, "64G"), Ok(Some(65536)));
        assert_eq!(parse(QuotaName::RunningMemoryMb, "2048"), Ok(Some(2048)));
        assert_eq!(parse(QuotaName::RunningMemoryMb, "1.5G"), Ok(Some(1536)));
        for unlimited in ["unlimited", "Unlimited", " -1 "] {
            assert_eq!(parse(QuotaName::ConcurrentJobs, unlimited), Ok(None));
        }
        for (quota, bad) in [
            (QuotaName::Servers, "2G"),
            (QuotaName::Servers, "-2"),
            (QuotaName::RunningVcpus, ""),
            (QuotaName::StorageBytes, "lots"),
            (QuotaName::StorageBytes, "16000P"),
        ] {
            assert!(parse(quota, bad).is_err(), "{quota:?} {bad}");
        }
    }
}
