//! A real Ceph cluster for the RBD storage tests: one monitor and one OSD (memstore) bound to
//! 127.0.0.1, auth none, started once for the whole test run ([`cluster`]) from Debian's
//! packages (`ceph-mon`, `ceph-osd`, `ceph-common`) by `scripts/ceph-test-cluster.sh`, the one
//! recipe the benchmarks use too. Each test gets a pool of its own ([`Ceph::new_pool`]), so one
//! test's orphan sweep never sees another's images.
//!
//! The script runs as a child of a thread that lives as long as the test process, with a
//! parent-death signal, and its daemons run under one of their own: however the run ends, the
//! script ends with it and the daemons with the script.
//!
//! A second cluster with cephx ([`cephx_cluster`]) is started only by the tests of Ceph
//! identities; its `ceph.conf` names the `client.admin` keyring, so tools run as admin. A test
//! that restarts the OSD starts a cluster of its own whose OSD keeps its data on a file
//! ([`PrivateCeph`], BlueStore), stopped when dropped.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub struct Ceph {
    pub conf: PathBuf,
    _dir: tempfile::TempDir,
}

static CLUSTER: OnceLock<Ceph> = OnceLock::new();
static CEPHX_CLUSTER: OnceLock<Ceph> = OnceLock::new();
static POOLS: AtomicU32 = AtomicU32::new(0);

/// The test run's cluster, started by the first test that asks.
pub fn cluster() -> &'static Ceph {
    CLUSTER.get_or_init(|| Ceph::start(&[]).0)
}

/// The server flags for a new pool of the test run's cluster, and the loopback ports a node
/// in a network namespace must be forwarded to reach it and PostgreSQL.
pub async fn new_pool_for_nodes() -> (Vec<String>, Vec<u16>) {
    let (rbd, mut ports) = tokio::task::spawn_blocking(|| {
        let cluster = cluster();
        (
            cluster.server_args(&cluster.new_pool()),
            cluster.client_ports(),
        )
    })
    .await
    .unwrap();
    ports.push(5432); // PostgreSQL
    (rbd, ports)
}

/// A cluster that authenticates with cephx, started by the first test that asks.
pub fn cephx_cluster() -> &'static Ceph {
    CEPHX_CLUSTER.get_or_init(|| Ceph::start(&["--cephx"]).0)
}

/// A cluster of one test's own, whose OSD keeps its data on a file (BlueStore) and can be
/// restarted ([`PrivateCeph::restart_osd`]); stopped when dropped.
pub struct PrivateCeph {
    ceph: Ceph,
    script: u32,
}

impl PrivateCeph {
    pub fn start() -> PrivateCeph {
        let (ceph, script) = Ceph::start(&["--bluestore"]);
        PrivateCeph { ceph, script }
    }

    /// Kills the OSD (as a crash would) and starts it again; returns at once.
    pub fn restart_osd(&self) {
        let pid = rustix::process::Pid::from_raw(self.script as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::USR1).unwrap();
    }

    /// How many times the OSD was restarted so far.
    pub fn osd_restarts(&self) -> usize {
        std::fs::read_to_string(self.ceph._dir.path().join("log/restarts"))
            .map(|text| text.lines().count())
            .unwrap_or(0)
    }
}

impl std::ops::Deref for PrivateCeph {
    type Target = Ceph;

    fn deref(&self) -> &Ceph {
        &self.ceph
    }
}

impl Drop for PrivateCeph {
    fn drop(&mut self) {
        // The script kills its daemons on TERM.
        if let Some(pid) = rustix::process::Pid::from_raw(self.script as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
}

/// Runs a Ceph command line to success, within a minute.
fn run(conf: &Path, tool: &str, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("60")
        .arg(tool)
        .arg("--conf")
        .arg(conf)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {tool} (Debian package ceph-common): {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Ceph {
    fn start(options: &[&str]) -> (Ceph, u32) {
        remove_stale_dirs();
        // The static is never dropped, so neither is this directory: the next run's
        // `remove_stale_dirs` removes it.
        let dir = tempfile::Builder::new()
            .prefix("extility-ceph-")
            .tempdir()
            .unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ceph-test-cluster.sh");
        let errors = dir.path().join("ceph-test-cluster.err");
        let (stdout, pid) = spawn_script(&script, dir.path(), options, &errors);
        // The script gives up by itself (every Ceph command has a deadline, the OSD two
        // minutes to come up), closing its stdout.
        let conf = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("ready ").map(PathBuf::from))
            .unwrap_or_else(|| {
                panic!(
                    "{} did not start the test Ceph cluster:\n{}",
                    script.display(),
                    std::fs::read_to_string(&errors).unwrap_or_default()
                )
            });
        (Ceph { conf, _dir: dir }, pid)
    }

    /// A new pool, initialised for RBD.
    pub fn new_pool(&self) -> String {
        let name = format!(
            "t{}-{}",
            std::process::id(),
            POOLS.fetch_add(1, Ordering::Relaxed)
        );
        run(
            &self.conf,
            "ceph",
            &["osd", "pool", "create", &name, "4", "4"],
        );
        self.rbd(&["pool", "init", &name]);
        name
    }

    /// The loopback ports a client of the cluster connects to: the monitor's and the OSD's
    /// public ones (for [`super::netns::LoopbackForwarder`]).
    pub fn client_ports(&self) -> Vec<u16> {
        let dump: serde_json::Value = serde_json::from_str(&run(
            &self.conf,
            "ceph",
            &["osd", "dump", "--format", "json"],
        ))
        .unwrap();
        let mon: serde_json::Value = serde_json::from_str(&run(
            &self.conf,
            "ceph",
            &["mon", "dump", "--format", "json"],
        ))
        .unwrap();
        let mut addresses: Vec<String> = Vec::new();
        for osd in dump["osds"].as_array().unwrap() {
            for a in osd["public_addrs"]["addrvec"].as_array().unwrap() {
                addresses.push(a["addr"].as_str().unwrap().to_string());
            }
        }
        for m in mon["mons"].as_array().unwrap() {
            for a in m["public_addrs"]["addrvec"].as_array().unwrap() {
                addresses.push(a["addr"].as_str().unwrap().to_string());
            }
        }
        let mut ports: Vec<u16> = addresses
            .iter()
            .filter_map(|a| a.rsplit(':').next()?.parse().ok())
            .collect();
        ports.sort();
        ports.dedup();
        ports
    }

    /// Runs `ceph` against the cluster; its output.
    pub fn ceph(&self, args: &[&str]) -> String {
        run(&self.conf, "ceph", args)
    }

    /// Runs `rbd` against the cluster; its output.
    pub fn rbd(&self, args: &[&str]) -> String {
        run(&self.conf, "rbd", args)
    }

    /// The RBD storage on `pool` of this cluster, as a node opens it, with the data directory
    /// it stages in.
    pub fn rbd_storage(
        &self,
        pool: &str,
    ) -> (extility::storage::rbd::RbdStorage, tempfile::TempDir) {
        use extility::storage::rbd::{RbdConfig, RbdStorage};
        let data = tempfile::tempdir().unwrap();
        let config = RbdConfig {
            pool: pool.to_string(),
            ceph_conf: Some(self.conf.clone()),
            ceph_user: None,
        };
        (RbdStorage::open(config, data.path()).unwrap(), data)
    }

    /// Runs `rados` against the cluster; its output.
    pub fn rados(&self, args: &[&str]) -> String {
        run(&self.conf, "rados", args)
    }

    /// The server flags for RBD storage in a new pool of this cluster.
    pub fn server_args(&self, pool: &str) -> Vec<String> {
        vec![
            "--storage".into(),
            "rbd".into(),
            "--rbd-pool".into(),
            pool.into(),
            "--ceph-conf".into(),
            self.conf.display().to_string(),
        ]
    }
}

/// Starts `script DIR` as a child of a thread that never ends, killed when the test process
/// ends (the parent-death signal follows the thread that spawned it); its stdout, to read, and
/// its stderr into `errors`.
fn spawn_script(script: &Path, dir: &Path, options: &[&str], errors: &Path) -> (ChildStdout, u32) {
    let errors = std::fs::File::create(errors).unwrap();
    let mut command = Command::new("bash");
    command
        .arg(script)
        .arg(dir)
        .args(options)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(errors);
    // SAFETY: the hook only makes one system call, which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
    let (tx, rx) = std::sync::mpsc::channel::<std::io::Result<(ChildStdout, u32)>>();
    std::thread::spawn(move || {
        match command.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok((child.stdout.take().unwrap(), child.id())));
                // The thread's end would send the script the parent-death signal.
                loop {
                    std::thread::park();
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    });
    rx.recv()
        .unwrap()
        .unwrap_or_else(|e| panic!("starting {}: {e}", script.display()))
}

/// Removes the directories of earlier runs' clusters that are gone (each is about 40 MB): the
/// lock the script and its daemons hold is free, or, in a directory without one (made by an
/// older suite), the monitor's admin socket answers no more. Directories under a minute old
/// are left alone (their cluster may be starting).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with("extility-ceph-")
        {
            continue;
        }
        let dir = entry.path();
        let recent = entry
            .metadata()
            .and_then(|m| m.modified())
            .map(|modified| modified.elapsed().unwrap_or_default() < Duration::from_secs(60))
            .unwrap_or(true);
        if recent {
            continue;
        }
        let gone = match std::fs::File::open(dir.join("lock")) {
            Ok(lock) => {
                rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                    .is_ok()
            }
            Err(_) => UnixStream::connect(dir.join("run/mon.a.asok")).is_err(),
        };
        if gone {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
