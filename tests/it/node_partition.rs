//! A network partition between a node and the cluster's database, made with network
//! namespaces (issue 22): two nodes, each `extility serve` in a namespace of its own (a host),
//! sharing PostgreSQL and a Ceph RBD pool through forwarders on each host's loopback. Node A
//! runs a server (a real QEMU); then every packet from A to PostgreSQL is dropped (nftables in
//! A's namespace), while A still reaches Ceph. A, unable to renew its heartbeat, powers its VM
//! off before its lease runs out (self-fencing); B starts the server only once A's lease has
//! run out; when the link is back A leaves the server to B. Over the whole test, a watcher of
//! the process table checks that at no moment do two QEMU processes run the server, and at
//! the end the disk has one writer. A link mended before anyone took a server over finds it
//! powered off all the same, recorded stopped, and not started again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::support::boot_media::{BOOT_TIMEOUT, boot_sector};
use crate::support::catalogue::{BLANK_IMAGE, DISK_1GB, SERVER_1CPU_512MB};
use crate::support::fetch_disk::{fetch, fetch_args};
use crate::support::guest::console_until;
use crate::support::image_server::ImageServer;
use crate::support::netns::LoopbackForwarder;
use crate::support::server_db::ServerDb;
use crate::support::{Api, Backend, Cluster, ceph, id, running_vms};
use crate::tenant_networks::{remove_netns, sh};

const LEASE_SECONDS: i64 = 6;

/// A host: a network namespace joined to the test's by a veth pair, `outside` here and
/// `inside` there.
struct Host {
    name: String,
    outside: String,
    inside: String,
}

impl Host {
    fn create(tag: &str, k: u8, i: u8) -> Host {
        let host = Host {
            name: format!("ext-p{tag}{i}"),
            outside: format!("10.251.{k}.{}", 4 * i + 1),
            inside: format!("10.251.{k}.{}", 4 * i + 2),
        };
        let (host_if, ns_if) = (format!("xp{tag}{i}h"), format!("xp{tag}{i}n"));
        sh(&["ip", "netns", "add", &host.name]);
        sh(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        sh(&["ip", "link", "set", &ns_if, "netns", &host.name]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", host.outside),
            "dev",
            &host_if,
        ]);
        sh(&["ip", "link", "set", &host_if, "up"]);
        let inside = format!("{}/30", host.inside);
        host.exec(&["ip", "addr", "add", &inside, "dev", &ns_if]);
        host.exec(&["ip", "link", "set", &ns_if, "up"]);
        host.exec(&["ip", "link", "set", "lo", "up"]);
        host
    }

    fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        sh(&all)
    }

    /// Drops every packet this host sends to PostgreSQL (its forwarder on the host's
    /// loopback): new connections and those open hang, as across a partition.
    fn cut_from_database(&self) {
        self.exec(&["nft", "add", "table", "inet", "partition"]);
        self.exec(&[
            "nft",
            "add chain inet partition out { type filter hook output priority 0 ; }",
        ]);
        self.exec(&[
            "nft",
            "add",
            "rule",
            "inet",
            "partition",
            "out",
            "tcp",
            "dport",
            "5432",
            "drop",
        ]);
    }

    fn mend(&self) {
        self.exec(&["nft", "delete", "table", "inet", "partition"]);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        remove_netns(&self.name);
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// When a QEMU process was first and last seen running.
#[derive(Debug, Clone, Copy)]
struct Seen {
    first_ms: i64,
    last_ms: i64,
}

/// Watches the process table, every few milliseconds for the whole test, for QEMU processes
/// of one server (`-name extility-<uuid>`, whichever node started them): each one's pid and
/// when it ran, and the most that ever ran at once.
struct QemuWatch {
    seen: Arc<Mutex<(BTreeMap<i32, Seen>, usize)>>,
    stop: Arc<AtomicBool>,
}

impl QemuWatch {
    fn start(server_uuid: &str) -> QemuWatch {
        let seen = Arc::new(Mutex::new((BTreeMap::new(), 0)));
        let stop = Arc::new(AtomicBool::new(false));
        let name = format!("extility-{server_uuid}");
        let (recording, stopping) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let running = qemu_of(&name);
                let now = now_ms();
                let mut seen = recording.lock().unwrap();
                seen.1 = seen.1.max(running.len());
                for pid in running {
                    seen.0
                        .entry(pid)
                        .and_modify(|s: &mut Seen| s.last_ms = now)
                        .or_insert(Seen {
                            first_ms: now,
                            last_ms: now,
                        });
                }
                drop(seen);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        QemuWatch { seen, stop }
    }

    fn processes(&self) -> BTreeMap<i32, Seen> {
        self.seen.lock().unwrap().0.clone()
    }

    fn most_at_once(&self) -> usize {
        self.seen.lock().unwrap().1
    }
}

impl Drop for QemuWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The pids of the QEMU processes whose command line names `name`.
fn qemu_of(name: &str) -> Vec<i32> {
    crate::support::qemu_processes(|arg| arg == name.as_bytes())
}

async fn get_server(api: &Api, server_id: i64) -> Value {
    api.call("GetServer", json!({"server_id": server_id})).await
}

async fn console_shows(api: &Api, server_id: i64, text: &str) {
    console_until(api, server_id, text, BOOT_TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_database_powers_its_vm_off_before_another_takes_it_over() {
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let tag = format!("{:x}", rand::random::<u32>() & 0xfffff);
    let k = rand::random::<u8>();
    let hosts = [Host::create(&tag, k, 0), Host::create(&tag, k, 1)];
    let (rbd, ports) = ceph::new_pool_for_nodes().await;
    let _forwarders = hosts
        .each_ref()
        .map(|host| LoopbackForwarder::start(&host.name, &ports));
    let mut args: Vec<String> = [
        "--hypervisor",
        "qemu",
        "--qemu-accel",
        "tcg",
        "--job-lease-seconds",
        &LEASE_SECONDS.to_string(),
        "--allow-fetch-from",
        &format!("{}/32", hosts[0].outside),
    ]
    .map(String::from)
    .to_vec();
    args.extend(rbd);
    let cluster = Cluster::with_args(Backend::Postgres, args).await;
    let node = |i: usize, name: &str| {
        cluster.node_in_netns(name, &hosts[i].name, &format!("{}:0", hosts[i].inside), &[])
    };
    // A alone at first, so that the server starts there.
    let a = node(0, "node-a");
    let customer = a.add_customer("pat@example.com", "pat-password", &[]);
    let via_a = a.api(&customer.email, &customer.password);
    let vdc = customer.vdc_id;

    let files = ImageServer::start_on(&format!("{}:0", hosts[0].outside)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut sector = boot_sector(dir.path(), "RUNS-ON-ONE-NODE", false);
    sector.resize(4096, 0);
    let url = files.put_data("boot.img", sector);
    let job = fetch(&via_a, fetch_args(&url, vdc, "boot")).await;
    let disk = via_a.job_ok(job).await["item_id"].as_i64().unwrap();
    let created = via_a
        .call(
            "CreateServer",
            json!({"vdc_id": vdc, "vlan_id": -1, "server_name": "partitioned",
                   "image_id": BLANK_IMAGE, "server_productoffer_id": SERVER_1CPU_512MB,
                   "disk_productoffer_ids": [DISK_1GB]}),
        )
        .await;
    let server_id = id(&created, "server_id");
    let uuid = created["server_uuid"].as_str().unwrap().to_string();
    let watch = QemuWatch::start(&uuid);
    via_a
        .call(
            "AttachDisk",
            json!({"server_id": server_id, "disk_id": disk, "index": 0}),
        )
        .await;
    let job = via_a
        .call("StartServer", json!({"server_id": server_id}))
        .await;
    via_a.job_ok(id(&job, "job_id")).await;
    assert_eq!(get_server(&via_a, server_id).await["node"], "node-a");
    console_shows(&via_a, server_id, "RUNS-ON-ONE-NODE").await;
    assert_eq!(running_vms(&a.vms_dir()).len(), 1);

    let b = node(1, "node-b");
    let via_b = b.api(&customer.email, &customer.password);
    let err = via_b
        .fail("StartServer", json!({"server_id": server_id}))
        .await;
    assert_eq!(err.code, "CONFLICT", "it runs, on a live node: {err:?}");

    // The partition: A no longer reaches PostgreSQL (it still reaches Ceph).
    hosts[0].cut_from_database();

    // B may start the server only once A's lease has run out; until then it refuses.
    let deadline = Instant::now() + Duration::from_secs(90);
    let job = loop {
        match via_b
            .try_call("StartServer", json!({"server_id": server_id}))
            .await
        {
            Ok(job) => break job,
            Err(err) => {
                assert_eq!(err.code, "CONFLICT", "{err:?}");
                assert!(Instant::now() < deadline, "never taken over: {err:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let start_job = id(&job, "job_id");
    via_b.job_ok(start_job).await;
    let moved = get_server(&via_b, server_id).await;
    assert_eq!(moved["status"], 2, "{moved}");
    assert_eq!(moved["node"], "node-b", "{moved}");
    console_shows(&via_b, server_id, "RUNS-ON-ONE-NODE").await;

    // A's last heartbeat (it could write none since) and when B's start was queued.
    let db = ServerDb::open(&b).await;
    let a_last_seen: i64 = sqlx::query_scalar("SELECT last_seen FROM nodes WHERE id = 'node-a'")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let queued = db
        .query_i64("SELECT created FROM jobs WHERE id = $1", start_job)
        .await
        .unwrap();
    let lease_ends = a_last_seen + LEASE_SECONDS * 1000;
    assert!(
        queued >= lease_ends,
        "B's start was queued {} ms before A's lease ran out",
        lease_ends - queued
    );
    // A powered its VM off before then, by itself: B found nothing to cut off the disk.
    let processes = watch.processes();
    assert_eq!(processes.len(), 2, "A's QEMU, then B's: {processes:?}");
    let (a_qemu, b_qemu) = {
        let mut by_start: Vec<_> = processes.values().copied().collect();
        by_start.sort_by_key(|s| s.first_ms);
        (by_start[0], by_start[1])
    };
    assert!(
        a_qemu.last_ms < lease_ends,
        "A's QEMU still ran {} ms after A's lease ran out",
        a_qemu.last_ms - lease_ends
    );
    assert!(a_qemu.last_ms < b_qemu.first_ms, "{processes:?}");
    assert!(
        a.log_text().contains("self-fencing"),
        "A says why it powered its VM off"
    );
    assert!(
        !b.log_text()
            .contains("cut off clients that still had a starting server's volume open"),
        "the disk still had a client when B started the server"
    );
    assert!(running_vms(&a.vms_dir()).is_empty());

    // The link is back: A serves again and leaves the server to B.
    hosts[0].mend();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !a
        .log_text()
        .contains("this node reaches the database again")
    {
        assert!(
            Instant::now() < deadline,
            "A never reached the database again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen_by_a = loop {
        match via_a
            .try_call("GetServer", json!({"server_id": server_id}))
            .await
        {
            Ok(server) => break server,
            Err(err) => {
                assert!(Instant::now() < deadline, "A never served again: {err:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(seen_by_a["status"], 2, "{seen_by_a}");
    assert_eq!(seen_by_a["node"], "node-b", "{seen_by_a}");
    // A has since seen the database at least once more (a heartbeat after the mend).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen: i64 = sqlx::query_scalar("SELECT last_seen FROM nodes WHERE id = 'node-a'")
            .fetch_one(db.pool())
            .await
            .unwrap();
        if seen > a_last_seen {
            break;
        }
        assert!(Instant::now() < deadline, "A's heartbeat never moved again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(running_vms(&a.vms_dir()).is_empty(), "A started it again");
    assert_eq!(running_vms(&b.vms_dir()).len(), 1);
    assert_eq!(watch.most_at_once(), 1, "{:?}", watch.processes());
    assert_eq!(watch.processes().len(), 2, "{:?}", watch.processes());

    // One writer of the disk: B's QEMU is the image's only watcher.
    let volume = db.of_disk(disk).await;
    let pool = volume.rbd.clone().unwrap().pool;
    let image = volume.path.to_string_lossy().into_owned();
    let status = ceph::cluster().rbd(&["status", "--format", "json", &format!("{pool}/{image}")]);
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["watchers"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );

    let job = via_b
        .call(
            "StopServer",
            json!({"server_id": server_id, "stop_method": 2}),
        )
        .await;
    via_b.job_ok(id(&job, "job_id")).await;

    // A link that comes back before anyone took the server over: A has fenced it all the
    // same, records it stopped (saying why) and does not start it again.
    let second = via_a
        .call(
            "CreateServer",
            json!({"vdc_id": vdc, "vlan_id": -1, "server_name": "fenced",
                   "image_id": BLANK_IMAGE, "server_productoffer_id": SERVER_1CPU_512MB,
                   "disk_productoffer_ids": [DISK_1GB]}),
        )
        .await;
    let second_id = id(&second, "server_id");
    let second_name = format!("extility-{}", second["server_uuid"].as_str().unwrap());
    let job = via_a
        .call("StartServer", json!({"server_id": second_id}))
        .await;
    via_a.job_ok(id(&job, "job_id")).await;
    assert_eq!(get_server(&via_a, second_id).await["node"], "node-a");
    assert_eq!(qemu_of(&second_name).len(), 1);
    let mends_before = a
        .log_text()
        .matches("this node reaches the database again")
        .count();
    hosts[0].cut_from_database();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !qemu_of(&second_name).is_empty() {
        assert!(Instant::now() < deadline, "A never fenced its VM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hosts[0].mend();
    while a
        .log_text()
        .matches("this node reaches the database again")
        .count()
        == mends_before
    {
        assert!(
            Instant::now() < deadline,
            "A never reached the database again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fenced = loop {
        let server = get_server(&via_b, second_id).await;
        if server["status"] != 2 {
            break server;
        }
        assert!(Instant::now() < deadline, "still running: {server}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(fenced["status_name"], "stopped", "{fenced}");
    assert!(
        fenced["status_reason"]
            .as_str()
            .is_some_and(|r| r.contains("cut off from the database")),
        "{fenced}"
    );
    assert!(qemu_of(&second_name).is_empty(), "A started it again");
    assert!(running_vms(&a.vms_dir()).is_empty());
}
