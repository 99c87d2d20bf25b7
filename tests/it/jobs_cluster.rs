//! Several `extility serve` processes on one database share the job queue: every job is
//! claimed and run exactly once, and the jobs of a node that dies are taken over.

use std::time::Duration;

use serde_json::json;

use crate::support::catalogue::{BLANK_IMAGE, DISK_1GB, SERVER_1CPU_1GB};
use crate::support::fetch_disk::{fetch, fetch_args, md5_hex, sparse_image};
use crate::support::image_server::{ImageServer, Served};
use crate::support::server_db::ServerDb;
use crate::support::{Api, Backend, Cluster, TestServer, db_test};

async fn two_nodes_run_each_job_once(backend: Backend) {
    // The queue is under test here, not virtual machines, nor the limit on a customer's calls
    // in flight (12 starts at once per node; a loaded machine keeps them in flight longer than
    // the limit's wait).
    let cluster = Cluster::new(
        backend,
        &[
            "--workers",
            "3",
            "--hypervisor",
            "none",
            "--max-calls-in-flight",
            "32",
        ],
    )
    .await;
    let a = cluster.node("node-a");
    let b = cluster.node("node-b");
    let customer = a.add_customer("carol@example.com", "carol-password", &[]);
    let via_a = a.api(&customer.email, &customer.password);
    let via_b: Api = b.api(&customer.email, &customer.password);

    const SERVERS: usize = 24;
    let mut servers = Vec::new();
    for i in 0..SERVERS {
        let server = via_a
            .call(
                "CreateServer",
                json!({"vdc_id": customer.vdc_id, "vlan_id": -1, "server_name": format!("s{i}"),
                       "image_id": BLANK_IMAGE, "server_productoffer_id": SERVER_1CPU_1GB,
                       "disk_productoffer_ids": [DISK_1GB]}),
            )
            .await;
        servers.push(server["server_id"].as_i64().unwrap());
    }
    // Queue the starts through both nodes at once, so both claim from the same queue.
    let starts = servers.iter().enumerate().map(|(i, id)| {
        let api = if i % 2 == 0 {
            via_a.clone()
        } else {
            via_b.clone()
        };
        let id = *id;
        async move {
            api.call("StartServer", json!({"server_id": id})).await["job_id"]
                .as_i64()
                .unwrap()
        }
    });
    let jobs = futures::future::join_all(starts).await;
    for job in &jobs {
        via_b.job_ok(*job).await;
    }
    for id in &servers {
        assert_eq!(
            via_a.call("GetServer", json!({"server_id": id})).await["status"],
            2
        );
    }

    // The database shows each job claimed once, and by one of the two nodes.
    let db = ServerDb::open(&a).await;
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as("SELECT id, attempts, status FROM jobs")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), SERVERS);
    for (id, attempts, status) in &rows {
        assert_eq!(
            (*attempts, *status),
            (1, 1),
            "job {id} ran {attempts} times"
        );
    }
    let nodes: Vec<(String,)> = sqlx::query_as("SELECT DISTINCT node FROM servers")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert!(
        nodes.iter().all(|(n,)| n == "node-a" || n == "node-b"),
        "{nodes:?}"
    );
}
db_test!(two_nodes_run_each_job_once, two_nodes_run_each_job_once);

async fn a_dead_nodes_job_is_taken_over(backend: Backend) {
    let cluster = Cluster::new(
        backend,
        &[
            "--job-lease-seconds",
            "3",
            "--allow-fetch-from",
            "127.0.0.0/8",
            "--hypervisor",
            "none",
        ],
    )
    .await;
    let mut a = cluster.node("node-a");
    let customer = a.add_customer("dave@example.com", "dave-password", &[]);
    let images = ImageServer::start().await;
    let (image, _) = sparse_image(4 << 20, 2, 7);
    // A slow link: the fetch takes a few seconds, long enough to kill the node running it.
    images.put(
        "slow.img",
        Served {
            data: image.clone().into(),
            pace: Some((128 << 10, Duration::from_millis(40))),
            ..Default::default()
        },
    );
    let via_a = a.api(&customer.email, &customer.password);
    let mut args = fetch_args(&images.url("slow.img"), customer.vdc_id, "moved");
    args["checksum"] = json!(md5_hex(&image));
    let job_id = fetch(&via_a, args).await;
    // Wait until node A is running it, then kill A without a word.
    via_a.job_until(job_id, |j| j["bytes_done"] != 0).await;
    a.kill9();

    // Node B starts later, on the same database and storage, and takes the job over once A's
    // lease has run out.
    let b = cluster.node("node-b");
    let via_b = b.api(&customer.email, &customer.password);
    let job = via_b.job_ok(job_id).await;
    assert_eq!(job["item_type"], "disk");
    let disks = via_b
        .call("ListDisks", json!({"vdc_id": customer.vdc_id}))
        .await;
    assert_eq!(
        disks.as_array().unwrap().len(),
        1,
        "exactly one disk: {disks}"
    );
    assert!(
        images
            .seen()
            .iter()
            .filter(|s| s.path == "slow.img")
            .count()
            >= 2,
        "node B fetched again"
    );
    let attempts = ServerDb::open(&b).await.job_attempts(job_id).await;
    assert_eq!(attempts, 2, "claimed by A, then once by B");
}
db_test!(
    a_dead_nodes_job_is_taken_over,
    a_dead_nodes_job_is_taken_over
);

/// The node that ran job `job_id`, from the servers' logs (JSON lines: the server's log
/// format when it is not writing to a terminal).
fn ran_on<'a>(job_id: i64, nodes: &'a [(&'a str, &TestServer)]) -> Vec<&'a str> {
    nodes
        .iter()
        .filter(|(_, server)| {
            server.log_text().lines().any(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .is_ok_and(|line| line["message"] == "job started" && line["job_id"] == job_id)
            })
        })
        .map(|(name, _)| *name)
        .collect()
}

async fn stopping_a_server_runs_on_its_node(backend: Backend) {
    let cluster = Cluster::new(
        backend,
        &["--job-lease-seconds", "3", "--hypervisor", "none"],
    )
    .await;
    let mut a = cluster.node("node-a");
    let b = cluster.node("node-b");
    let customer = a.add_customer("erin@example.com", "erin-password", &[]);
    let (via_a, via_b) = (
        a.api(&customer.email, &customer.password),
        b.api(&customer.email, &customer.password),
    );
    let mut servers = Vec::new();
    for name in ["one", "two"] {
        let server = via_a
            .call(
                "CreateServer",
                json!({"vdc_id": customer.vdc_id, "vlan_id": -1, "server_name": name,
                       "image_id": BLANK_IMAGE, "server_productoffer_id": SERVER_1CPU_1GB,
                       "disk_productoffer_ids": [DISK_1GB]}),
            )
            .await;
        let job = via_a
            .call("StartServer", json!({"server_id": server["server_id"]}))
            .await;
        via_a.job_ok(job["job_id"].as_i64().unwrap()).await;
        servers.push(server["server_id"].as_i64().unwrap());
    }
    let db = ServerDb::open(&a).await;
    let node_of = async |id: i64| -> String {
        sqlx::query_scalar("SELECT node FROM servers WHERE id = $1")
            .bind(id)
            .fetch_one(db.pool())
            .await
            .unwrap()
    };
    // Whichever node started the first server must stop it, though the other node is asked.
    let home = node_of(servers[0]).await;
    let (asked, other) = if home == "node-a" {
        (&via_b, "node-b")
    } else {
        (&via_a, "node-a")
    };
    let stop = asked
        .call(
            "StopServer",
            json!({"server_id": servers[0], "stop_method": 2}),
        )
        .await["job_id"]
        .as_i64()
        .unwrap();
    asked.job_ok(stop).await;
    let nodes = [("node-a", &a), ("node-b", &b)];
    assert_eq!(
        ran_on(stop, &nodes),
        [home.as_str()],
        "the stop ran on the server's node, not {other}"
    );

    // When a server's node dies, another node stops it once the dead node's silence is long
    // enough (its lease time).
    let second_home = node_of(servers[1]).await;
    if second_home == "node-b" {
        // Make node A the one that dies: move the server's record to A, as if A had started it.
        sqlx::query("UPDATE servers SET node = 'node-a' WHERE id = $1")
            .bind(servers[1])
            .execute(db.pool())
            .await
            .unwrap();
    }
    a.kill9();
    let stop = via_b
        .call(
            "StopServer",
            json!({"server_id": servers[1], "stop_method": 2}),
        )
        .await["job_id"]
        .as_i64()
        .unwrap();
    via_b.job_ok(stop).await;
    assert_eq!(
        via_b
            .call("GetServer", json!({"server_id": servers[1]}))
            .await["status"],
        5
    );
    assert_eq!(ran_on(stop, &[("node-b", &b)]), ["node-b"]);
}
db_test!(
    stopping_a_server_runs_on_its_node,
    stopping_a_server_runs_on_its_node
);
