//! `extility nodes` (issue 14): the cluster's nodes with what each offers, its liveness and
//! the load of the servers it runs; GetServer names the node of a server. Two nodes share a
//! PostgreSQL database, as a cluster does.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::catalogue::{BLANK_IMAGE, DISK_1GB, SERVER_1CPU_512MB};
use crate::support::{Backend, Cluster, TestServer};

/// `extility nodes --json` against the server's database.
fn nodes(server: &TestServer, lease_seconds: &str) -> Vec<Value> {
    let out = server.cli(&["nodes", "--json", "--job-lease-seconds", lease_seconds]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn node<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter()
        .find(|n| n["node"] == id)
        .unwrap_or_else(|| panic!("node {id} in {list:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_show_capacity_load_and_liveness() {
    let cluster = Cluster::new(Backend::Postgres, &["--hypervisor", "none"]).await;
    let (a, mut b) = (cluster.node("node-a"), cluster.node("node-b"));
    let customer = a.add_customer("nina@example.com", "nina-password", &[]);
    let api = a.api(&customer.email, &customer.password);
    let vdc = customer.vdc_id;

    let listed = nodes(&a, "30");
    assert_eq!(listed.len(), 2, "{listed:?}");
    for (id, server) in [("node-a", &a), ("node-b", &b)] {
        let n = node(&listed, id);
        assert_eq!(n["alive"], true, "{n}");
        assert_eq!(n["address"], server.url.as_str(), "{n}");
        assert_eq!(n["can_run_vms"], false, "hypervisor none: {n}");
        assert!(n["vcpus"].as_i64().unwrap() >= 1, "{n}");
        assert!(n["memory_mb"].as_i64().unwrap() >= 64, "{n}");
        assert_eq!(n["servers"], 0);
    }

    // A running server counts on its node, and GetServer names that node.
    let server = api
        .call(
            "CreateServer",
            json!({"vdc_id": vdc, "vlan_id": -1, "server_name": "loaded",
                   "image_id": BLANK_IMAGE, "server_productoffer_id": SERVER_1CPU_512MB,
                   "disk_productoffer_ids": [DISK_1GB]}),
        )
        .await;
    assert_eq!(server["node"], Value::Null, "never started");
    let server_id = server["server_id"].as_i64().unwrap();
    let job = api
        .call("StartServer", json!({"server_id": server_id}))
        .await;
    api.job_ok(job["job_id"].as_i64().unwrap()).await;
    let started = api.call("GetServer", json!({"server_id": server_id})).await;
    let runs_on = started["node"].as_str().unwrap().to_string();
    let listed = nodes(&a, "30");
    let n = node(&listed, &runs_on);
    assert_eq!(n["servers"], 1, "{n}");
    assert_eq!(n["used_vcpus"], started["processors"], "{n}");
    assert_eq!(n["used_memory_mb"], started["memory"], "{n}");

    // A node that stops showing it is alive is down once its heartbeat is older than the
    // lease (6 s here; nodes beat every 2 s); the other stays up.
    b.kill9();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = nodes(&a, "6");
        if node(&listed, "node-b")["alive"] == false {
            assert_eq!(node(&listed, "node-a")["alive"], true, "{listed:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node-b never went down: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The table for people.
    let out = a.cli(&["nodes", "--job-lease-seconds", "6"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("NODE"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("node-b") && l.contains(" down ")),
        "{table}"
    );
}

/// StartServer places a server on a live node that runs VMs: the least loaded one, and its
/// previous node when it starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_start_on_the_least_loaded_node_and_again_on_their_own() {
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let cluster = Cluster::new(
        Backend::Postgres,
        &[
            "--hypervisor",
            "qemu",
            "--qemu-accel",
            "tcg",
            "--job-lease-seconds",
            "6",
        ],
    )
    .await;
    let (a, mut b) = (cluster.node("node-a"), cluster.node("node-b"));
    let customer = a.add_customer("pia@example.com", "pia-password", &[]);
    let api = a.api(&customer.email, &customer.password);
    let vdc = customer.vdc_id;
    let listed = nodes(&a, "30");
    assert!(
        listed.iter().all(|n| n["can_run_vms"] == true),
        "{listed:?}"
    );

    let mut servers = Vec::new();
    for name in ["first", "second"] {
        let server = api
            .call(
                "CreateServer",
                json!({"vdc_id": vdc, "vlan_id": -1, "server_name": name,
                       "image_id": BLANK_IMAGE, "server_productoffer_id": SERVER_1CPU_512MB,
                       "disk_productoffer_ids": [DISK_1GB]}),
            )
            .await;
        servers.push(server["server_id"].as_i64().unwrap());
    }
    let start = |id: i64| {
        let api = api.clone();
        async move {
            let job = api.call("StartServer", json!({"server_id": id})).await;
            api.job_ok(job["job_id"].as_i64().unwrap()).await;
            api.call("GetServer", json!({"server_id": id})).await["node"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    // Both started at once: equal loads put the first on node-a (first by id); the second,
    // queued before the first has booted, still counts it there and goes to node-b.
    let mut jobs = Vec::new();
    for id in &servers {
        let job = api.call("StartServer", json!({"server_id": id})).await;
        jobs.push(job["job_id"].as_i64().unwrap());
    }
    for job in jobs {
        api.job_ok(job).await;
    }
    let node_of = |id: i64| {
        let api = api.clone();
        async move {
            api.call("GetServer", json!({"server_id": id})).await["node"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    assert_eq!(node_of(servers[0]).await, "node-a");
    assert_eq!(node_of(servers[1]).await, "node-b", "the least loaded node");

    // Both stopped, the nodes are equally loaded again; started again, the second comes back
    // to its node rather than to node-a, first by id.
    let job = api
        .call(
            "StopServer",
            json!({"server_id": servers[0], "stop_method": 2}),
        )
        .await;
    api.job_ok(job["job_id"].as_i64().unwrap()).await;
    let job = api
        .call(
            "StopServer",
            json!({"server_id": servers[1], "stop_method": 2}),
        )
        .await;
    api.job_ok(job["job_id"].as_i64().unwrap()).await;
    assert_eq!(start(servers[1]).await, "node-b", "its previous node");

    // With the file storage a server stays with its disks: its node lost, it does not start
    // elsewhere (its VM may still run there, on files no other node should open).
    b.kill9();
    let deadline = Instant::now() + Duration::from_secs(60);
    let err = loop {
        let err = api
            .fail("StartServer", json!({"server_id": servers[1]}))
            .await;
        assert_eq!(err.code, "CONFLICT", "{err:?}");
        if err.message.contains("stopped answering") {
            break err;
        }
        assert!(Instant::now() < deadline, "node-b never lost: {err:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(err.message.contains("node-b"), "{err:?}");
    b.restart();
    let job = api
        .call(
            "StopServer",
            json!({"server_id": servers[1], "stop_method": 2}),
        )
        .await;
    api.job_ok(job["job_id"].as_i64().unwrap()).await;
}
