//! A real Ceph cluster for the RBD storage tests: one monitor and one OSD (memstore) bound to
//! 127.0.0.1, auth none, started once for the whole test run ([`cluster`]) from Debian's
//! packages (`ceph-mon`, `ceph-osd`, `ceph-common`). Each test gets a pool of its own
//! ([`Ceph::new_pool`]), so one test's orphan sweep never sees another's images.
//!
//! The daemons run in the foreground as children of a thread that lives as long as the test
//! process, with a parent-death signal: however the run ends, they end with it.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub struct Ceph {
    pub conf: PathBuf,
    _dir: tempfile::TempDir,
}

static CLUSTER: OnceLock<Ceph> = OnceLock::new();
static POOLS: AtomicU32 = AtomicU32::new(0);

/// The test run's cluster, started by the first test that asks.
pub fn cluster() -> &'static Ceph {
    CLUSTER.get_or_init(Ceph::start)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    fn start() -> Ceph {
        let dir = tempfile::Builder::new()
            .prefix("extility-ceph-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        for sub in ["run", "log", "mon", "osd/osd.0"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let (v2, v1) = (free_port(), free_port());
        let conf = d.join("ceph.conf");
        let d = d.display();
        std::fs::write(
            &conf,
            format!(
                "[global]
fsid = {fsid}
mon initial members = a
mon host = [v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
run dir = {d}/run
log file = {d}/log/$name.log
admin socket = {d}/run/$name.asok
mon data = {d}/mon/$name
osd data = {d}/osd/$name
osd objectstore = memstore
memstore device bytes = 8589934592
[mon.a]
public addrv = [v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]
[client]
admin socket =
log file = /dev/null
",
                fsid = uuid::Uuid::new_v4(),
            ),
        )
        .unwrap();
        let conf_s = conf.to_str().unwrap();
        let ok = Command::new("ceph-mon")
            .args(["--conf", conf_s, "--mkfs", "-i", "a"])
            .status()
            .expect("running ceph-mon (Debian package ceph-mon)");
        assert!(ok.success(), "ceph-mon --mkfs failed");
        spawn_daemon(
            "ceph-mon",
            vec![
                "--conf".into(),
                conf_s.into(),
                "-f".into(),
                "-i".into(),
                "a".into(),
            ],
        );
        run(&conf, "ceph", &["osd", "create"]);
        let host = String::from_utf8(Command::new("hostname").output().unwrap().stdout).unwrap();
        run(
            &conf,
            "ceph",
            &[
                "osd",
                "crush",
                "add",
                "osd.0",
                "1",
                "root=default",
                &format!("host={}", host.trim()),
            ],
        );
        let ok = Command::new("ceph-osd")
            .args(["--conf", conf_s, "--mkfs", "-i", "0"])
            .stderr(Stdio::null())
            .status()
            .expect("running ceph-osd (Debian package ceph-osd)");
        assert!(ok.success(), "ceph-osd --mkfs failed");
        spawn_daemon(
            "ceph-osd",
            vec![
                "--conf".into(),
                conf_s.into(),
                "-f".into(),
                "-i".into(),
                "0".into(),
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        while !run(&conf, "ceph", &["osd", "stat"]).contains("1 up") {
            assert!(Instant::now() < deadline, "the test OSD did not come up");
            std::thread::sleep(Duration::from_millis(200));
        }
        Ceph { conf, _dir: dir }
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
        run(&self.conf, "rbd", &["pool", "init", &name]);
        name
    }

    /// Runs `rbd` against the cluster; its output.
    pub fn rbd(&self, args: &[&str]) -> String {
        run(&self.conf, "rbd", args)
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

/// Starts a daemon in the foreground as a child of a thread that never ends, killed when the
/// test process ends (the parent-death signal follows the thread that spawned it).
fn spawn_daemon(program: &'static str, args: Vec<String>) {
    let (tx, rx) = std::sync::mpsc::channel::<std::io::Result<Child>>();
    std::thread::spawn(move || {
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: the hook only makes one system call, which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))
                .map_err(std::io::Error::from)
            });
        }
        let child = command.spawn();
        let started = child.is_ok();
        let _ = tx.send(child);
        while started {
            std::thread::park();
        }
    });
    rx.recv()
        .unwrap()
        .unwrap_or_else(|e| panic!("starting {program} (Debian packages ceph-mon, ceph-osd): {e}"));
}
