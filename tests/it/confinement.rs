//! VMs run unprivileged and confined (issue 20), tried on real VMs started through the API by
//! a server running as root:
//! - "Confinement": a running VM's QEMU is not root, runs under seccomp, has a memory limit
//!   in a cgroup of its own, carries none of the server's environment, and as its user
//!   cannot open the database, the secret key or the volumes.
//! - "Metadata flood": a guest on the user-mode network holding 12 connections to the
//!   metadata address does not stop another VM from reading its metadata (the forward is per
//!   VM), and still reads its own.
//!
//! Needs root (the tests skip otherwise), QEMU, `setpriv` (util-linux), and for the guests
//! `linux-image-amd64` and `busybox-static` (scripts/test.sh installs them).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::boot_media::{BOOT_TIMEOUT, boot_sector};
use crate::support::catalogue::{SERVER_1CPU_1GB, SERVER_1CPU_512MB};
use crate::support::guest::{guest_disk_with, guest_init, qemu_options};
use crate::support::test_app::Boot;
use crate::support::{Api, Backend, TestApp, id, running_vms};

/// What QEMU may use beside the guest's memory (the driver's `QEMU_OVERHEAD_MB` and 1/16).
fn expected_memory_limit(memory_mb: u64) -> u64 {
    (memory_mb + 384 + memory_mb / 16) << 20
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A field of `/proc/PID/status`.
fn status_field(pid: i32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// The memory limit of the cgroup `pid` is in (v1's memory hierarchy, or v2's group).
fn memory_limit(pid: i32) -> (String, String) {
    let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in groups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        if controllers.split(',').any(|c| c == "memory") {
            let file = format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes");
            return (
                path.to_string(),
                std::fs::read_to_string(&file).unwrap().trim().into(),
            );
        }
    }
    let path = groups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no memory cgroup for {pid}: {groups}"));
    let file = format!("/sys/fs/cgroup{path}/memory.max");
    (
        path.to_string(),
        std::fs::read_to_string(&file).unwrap().trim().into(),
    )
}

/// Runs `cat FILE` as `uid` (its group the same number, no other group): what QEMU's user
/// could read. Returns whether it read it, and what it said.
fn read_as(uid: &str, file: &Path) -> (bool, String) {
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "cat",
        ])
        .arg(file)
        .output()
        .expect("setpriv (util-linux)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A server of alice's on `vlan` with the offer `offer`, whose first disk is `image`, fetched
/// as `<name> disk` (not started); returns its id.
async fn server_from(app: &TestApp, image: Vec<u8>, vlan: i64, name: &str, offer: i64) -> i64 {
    let server = Boot {
        name,
        vlan_id: vlan,
        server_offer: offer,
        ..Boot::default()
    };
    let server_id = id(&app.create_server(server).await, "server_id");
    let disk = app.fetch_bytes(image, &format!("{name} disk")).await;
    app.attach_first(server_id, &disk).await;
    server_id
}

async fn uuid_of(api: &Api, server_id: i64) -> String {
    let server: Value = api.call("GetServer", json!({"server_id": server_id})).await;
    server["server_uuid"].as_str().unwrap().to_string()
}

/// The pid of the QEMU running the server `uuid`.
fn qemu_of(app: &TestApp, uuid: &str) -> i32 {
    let name = format!("extility-{uuid}");
    running_vms(&app.server.vms_dir())
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == name.as_bytes()))
        })
        .unwrap_or_else(|| panic!("no QEMU runs for server {uuid}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_vm_is_unprivileged_sandboxed_and_bounded() {
    if !is_root() {
        eprintln!("confinement: skipped, VMs are confined only when the server runs as root");
        return;
    }
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let app = TestApp::start_with(Backend::Sqlite, qemu_options(&[])).await;
    let mut image = boot_sector(app.dir.path(), "CONFINED-VM-UP", false);
    image.resize(4096, 0);
    let alice = app.alice();
    let vlan = app.vlan("lan").await;
    let server_id = server_from(&app, image, vlan, "confined", SERVER_1CPU_1GB).await;
    app.start_server(server_id).await;
    app.console_until(server_id, "CONFINED-VM-UP", BOOT_TIMEOUT)
        .await;
    let uuid = uuid_of(&alice, server_id).await;
    let pid = qemu_of(&app, &uuid);

    // Not root: a uid of its own (real, effective, saved and file system), no groups.
    let uids: Vec<String> = status_field(pid, "Uid")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(uids.len(), 4);
    assert!(uids.iter().all(|u| u == &uids[0]), "{uids:?}");
    assert_ne!(uids[0], "0", "QEMU must not run as root");
    assert_eq!(
        status_field(pid, "Gid").split_whitespace().next(),
        Some(uids[0].as_str())
    );
    assert_eq!(status_field(pid, "Groups"), "", "no supplementary groups");
    // seccomp in filter mode (QEMU's -sandbox).
    assert_eq!(status_field(pid, "Seccomp"), "2");
    // A memory limit: the offer's 1 GB and QEMU's overhead, in a cgroup of its own.
    let (group, limit) = memory_limit(pid);
    assert!(group.contains(&uuid), "a cgroup of the VM's own: {group}");
    assert_eq!(limit, expected_memory_limit(1024).to_string(), "{group}");
    // None of the server's environment (the database's URL, say).
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        !environ.contains("DATABASE_URL") && !environ.contains("EXTILITY"),
        "{environ}"
    );
    // Its user cannot read the database, the secret key, its own volumes or its own data
    // directory; QEMU holds descriptors for what it needs.
    let data = &app.server.data_dir;
    let volume = std::fs::read_dir(data.join("volumes"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_file())
        .expect("a volume file");
    for file in [
        data.join("extility.db"),
        data.join("secret.key"),
        volume,
        data.join("vms").join(&uuid).join("console.log"),
    ] {
        assert!(file.exists(), "{} exists", file.display());
        let (read, said) = read_as(&uids[0], &file);
        assert!(!read, "QEMU's user read {}", file.display());
        assert!(
            said.contains("Permission denied"),
            "{}: {said}",
            file.display()
        );
    }
    // The VM still works as a VM: it stops on request.
    let job = alice
        .call(
            "StopServer",
            json!({"server_id": server_id, "stop_method": 2}),
        )
        .await;
    alice.job_ok(job["job_id"].as_i64().unwrap()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "QEMU ended");
    let group_dir =
        ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"].map(|root| format!("{root}{group}"));
    // (Its memory limit was read from it above, while the VM ran.)
    let deadline = Instant::now() + Duration::from_secs(30);
    while group_dir.iter().any(|d| Path::new(d).exists()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !group_dir.iter().any(|d| Path::new(d).exists()),
        "the VM's cgroup {group} is removed with it"
    );
}

/// The guests' `/init`: read the server's own metadata (name and password); the server named
/// `flooder` then holds 12 connections to the metadata address open (opening more whenever
/// fewer are established), and reads its metadata once more; any other prints what it read.
const INIT: &str = guest_init!(
    r#"echo "GUEST INIT"
for m in $(cat /etc/modules); do insmod /lib/modules/$m.ko || echo "INSMOD FAILED $m"; done
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -s /etc/udhcpc.sh -q -n -t 5 -T 2 >/dev/null 2>&1
F=/sys/firmware/qemu_fw_cfg/by_name/opt/com.extility
token=$(cat $F/metadata-token/raw)
# The forward leaves closing to the guest: nc, which waits for it, is cut off.
read_metadata() {
  printf 'GET /metadata/v1/server.xml HTTP/1.0\r\nHost: 10.0.2.100\r\nX-Extility-Metadata-Token: %s\r\n\r\n' "$token" | timeout 10 nc 10.0.2.100 80 > /tmp/md
  if grep -q '<initial-password>' /tmp/md; then
    echo "METADATA $1 $(grep -o '<server-name>[^<]*' /tmp/md | cut -d '>' -f 2) $(grep -o '<initial-password>[^<]*' /tmp/md | cut -d '>' -f 2)"
  else
    echo "METADATA $1 FAILED $(head -c 200 /tmp/md | tr '\r\n' '  ')"
  fi
}
read_metadata FIRST
established() { netstat -tn 2>/dev/null | grep '10.0.2.100:80 ' | grep -c ESTABLISHED; }
if grep -q '<server-name>flooder<' /tmp/md; then
  (while :; do
    n=$(established)
    while [ "$n" -lt 12 ]; do sleep 3600 | nc 10.0.2.100 80 >/dev/null 2>&1 & n=$((n+1)); done
    sleep 1
  done) &
  until [ "$(established)" -ge 12 ]; do sleep 1; done
  echo "FLOODING $(established)"
  read_metadata AGAIN
fi
echo "GUEST DONE"
while :; do sleep 3600; done
"#
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_flooding_the_metadata_forward_holds_up_only_itself() {
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let app = TestApp::start_with(Backend::Sqlite, qemu_options(&[])).await;
    let disk = std::fs::read(guest_disk_with(app.dir.path(), INIT, "quiet")).unwrap();
    let alice = app.alice();
    let vlan = app.vlan("lan").await;
    let flooder = server_from(&app, disk.clone(), vlan, "flooder", SERVER_1CPU_512MB).await;
    let reader = server_from(&app, disk, vlan, "reader", SERVER_1CPU_512MB).await;
    let timeout = Duration::from_secs(300);

    app.start_server(flooder).await;
    let log = app.console_until(flooder, "FLOODING", timeout).await;
    eprintln!("confinement: the flooder said:\n{log}");
    // The flood is in place (12 connections or more held open) before the other VM starts.
    let held: usize = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("FLOODING "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    assert!(held >= 12, "{log}");

    app.start_server(reader).await;
    let log = app.console_until(reader, "GUEST DONE", timeout).await;
    let password = |id| {
        let alice = alice.clone();
        async move {
            alice.call("GetServer", json!({"server_id": id})).await["initial_password"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let reader_password = password(reader).await;
    assert!(
        log.contains(&format!("METADATA FIRST reader {reader_password}")),
        "the other VM reads its metadata during the flood: {log}"
    );
    // The flooder holds up only its own forward, and even it is still served.
    let log = app.console_until(flooder, "GUEST DONE", timeout).await;
    let flooder_password = password(flooder).await;
    assert!(
        log.contains(&format!("METADATA AGAIN flooder {flooder_password}")),
        "{log}"
    );
    // Still flooding: the connections are held.
    assert!(!log.contains("FAILED"), "no metadata read failed: {log}");
}

/// On a Ceph cluster with cephx, a confined VM opens its RBD images as `--ceph-vm-user`, whose
/// caps reach only the server's pool: QEMU is given that user and a copy of its keyring only
/// (never the admin key the server holds), the VM boots from its image, and with what the VM
/// holds nothing can be written to another pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_on_cephx_holds_only_a_key_for_its_own_pool() {
    if !is_root() {
        eprintln!("confinement: skipped, VMs are confined only when the server runs as root");
        return;
    }
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let dir = tempfile::tempdir().unwrap();
    let vm_keyring = dir.path().join("vm.keyring");
    let (cluster, pool, other_pool) = {
        let vm_keyring = vm_keyring.clone();
        tokio::task::spawn_blocking(move || {
            let cluster = crate::support::ceph::cephx_cluster();
            let (pool, other_pool) = (cluster.new_pool(), cluster.new_pool());
            let caps = format!("profile rbd pool={pool}");
            cluster.ceph(&[
                "auth",
                "get-or-create",
                &format!("client.vm-{pool}"),
                "mon",
                "profile rbd",
                "osd",
                &caps,
                "-o",
                &vm_keyring.display().to_string(),
            ]);
            (cluster, pool, other_pool)
        })
        .await
        .unwrap()
    };
    let vm_user = format!("vm-{pool}");
    let mut args = cluster.server_args(&pool);
    args.extend([
        "--ceph-vm-user".to_string(),
        vm_user.clone(),
        "--ceph-vm-keyring".to_string(),
        vm_keyring.display().to_string(),
    ]);
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let app = TestApp::start_with(Backend::Sqlite, qemu_options(&arg_refs)).await;
    let mut image = boot_sector(app.dir.path(), "CEPHX-VM-UP", false);
    image.resize(4096, 0);
    let alice = app.alice();
    let vlan = app.vlan("lan").await;
    let server_id = server_from(&app, image, vlan, "on-cephx", SERVER_1CPU_512MB).await;
    app.start_server(server_id).await;
    // The VM read its boot disk from the pool as its own user.
    app.console_until(server_id, "CEPHX-VM-UP", BOOT_TIMEOUT)
        .await;
    let pid = qemu_of(&app, &uuid_of(&alice, server_id).await);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains(&format!("file.user={vm_user}")),
        "QEMU opens its images as {vm_user}: {cmdline}"
    );
    let conf = cmdline
        .split([' ', ','])
        .find_map(|part| part.strip_prefix("file.conf="))
        .unwrap_or_else(|| panic!("QEMU is given a Ceph configuration: {cmdline}"));
    let conf = Path::new(conf);
    assert!(
        !conf.starts_with(&cluster.conf),
        "a copy of the configuration"
    );
    let keyring = std::fs::read_to_string(conf.with_file_name("ceph.keyring")).unwrap();
    let admin = std::fs::read_to_string(cluster.conf.with_file_name("admin.keyring")).unwrap();
    let admin_key = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("key = "))
        .unwrap();
    assert!(
        keyring.contains(&format!("[client.{vm_user}]")),
        "{keyring}"
    );
    assert!(!keyring.contains(admin_key), "the VM holds no admin key");

    // What the VM holds reaches its own pool and writes nothing into another.
    let as_vm = |pool: &str, args: &[&str]| {
        Command::new("timeout")
            .args(["30", "rbd", "--conf"])
            .arg(conf)
            .args(["--id", &vm_user, "-p", pool])
            .args(args)
            .output()
            .unwrap()
    };
    let own = as_vm(&pool, &["ls"]);
    assert!(own.status.success(), "{own:?}");
    assert!(!String::from_utf8_lossy(&own.stdout).trim().is_empty());
    let other = as_vm(&other_pool, &["create", "--size", "1M", "planted"]);
    assert!(!other.status.success(), "{other:?}");
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("not permitted"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    assert!(cluster.rbd(&["ls", "-p", &other_pool]).trim().is_empty());
}
