//! Quotas over the JSON API: each quota refusing what would exceed it (QUOTA_EXCEEDED, naming
//! it, with nothing made and no job queued), the platform defaults (`serve --quota-*`) and
//! per-customer overrides (`extility customer set-quota`), GetQuota's limits and use going up
//! and down, concurrent calls racing against a limit, and a node refusing new fetches and
//! copies below its reserve of free space (`--min-free-space`).
//!
//! Servers run with `--hypervisor none`: starting one only records its state.

use std::process::Command;

use serde_json::{Value, json};

use crate::support::catalogue::{
    BLANK_IMAGE, DISK_1GB, DISK_10GB, DISK_20GB, SERVER_1CPU_1GB, SERVER_1CPU_512MB,
    SERVER_2CPU_2GB,
};
use crate::support::{Api, ApiError, Backend, ServerOptions, TestApp, db_test, id};

const GIB: i64 = 1 << 30;

async fn start(backend: Backend, args: &[&str]) -> TestApp {
    let mut all = vec!["--hypervisor", "none"];
    all.extend_from_slice(args);
    TestApp::start_with(
        backend,
        ServerOptions {
            args: all.into_iter().map(String::from).collect(),
            ..Default::default()
        },
    )
    .await
}

/// Runs `extility customer set-quota --email <email> <args>` on the app's database.
fn try_set_quota(app: &TestApp, email: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(crate::support::binary())
        .args(["customer", "set-quota", "--email", email])
        .args(args)
        .arg("--data-dir")
        .arg(&app.server.data_dir)
        .arg("--database-url")
        .arg(&app.server.db_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running extility customer set-quota");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn set_quota(app: &TestApp, email: &str, args: &[&str]) -> String {
    try_set_quota(app, email, args).unwrap_or_else(|err| panic!("set-quota {args:?} failed: {err}"))
}

#[track_caller]
fn assert_exceeded(err: &ApiError, quota: &str) {
    assert_eq!(err.code, "QUOTA_EXCEEDED", "{err:?}");
    assert_eq!(err.status, 403, "{err:?}");
    assert!(
        err.message
            .starts_with(&format!("quota {quota} exceeded: ")),
        "{err:?}"
    );
}

async fn quota(api: &Api) -> Value {
    api.call("GetQuota", json!({})).await
}

async fn try_create_disk(api: &Api, vdc: i64, name: &str, offer: i64) -> Result<Value, ApiError> {
    api.try_call(
        "CreateDisk",
        json!({"vdc_id": vdc, "name": name, "disk_productoffer_id": offer, "image_id": 0}),
    )
    .await
}

async fn try_create_server(
    api: &Api,
    vdc: i64,
    name: &str,
    offer: i64,
    disks: &[i64],
) -> Result<Value, ApiError> {
    api.try_call(
        "CreateServer",
        json!({"vdc_id": vdc, "vlan_id": -1, "server_name": name, "image_id": BLANK_IMAGE,
               "server_productoffer_id": offer, "disk_productoffer_ids": disks}),
    )
    .await
}

async fn count(api: &Api, op: &str, vdc: i64) -> usize {
    api.call(op, json!({"vdc_id": vdc}))
        .await
        .as_array()
        .unwrap()
        .len()
}

async fn jobs(api: &Api) -> usize {
    api.call("ListJobs", json!({}))
        .await
        .as_array()
        .unwrap()
        .len()
}

async fn private_images(api: &Api) -> Vec<Value> {
    let images = api.call("ListImages", json!({})).await;
    images
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["visibility"] != "platform")
        .cloned()
        .collect()
}

fn fetch_args(url: &str, vdc: i64, offer: i64, make_image: bool) -> Value {
    json!({"url": url, "name": "fetched", "disk_productoffer_id": offer, "vdc_id": vdc,
           "make_image": make_image})
}

/// An HTTP server that accepts connections and never answers: a fetch from it stays
/// unfinished until it is cancelled (or, minutes later, gives up).
async fn stalling_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/image.img", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

async fn cancel(api: &Api, job_id: i64) {
    api.call("CancelJob", json!({"job_id": job_id})).await;
    let job = api.wait_job(job_id).await;
    assert_eq!(job["status"], 4, "{job}");
}

async fn storage_quota(backend: Backend) {
    let app = start(
        backend,
        &[
            "--quota-storage-bytes",
            "25G",
            "--allow-fetch-from",
            "127.0.0.1/32",
        ],
    )
    .await;
    let (alice, vdc) = (app.alice(), app.alice.vdc_id);
    let stalling = stalling_url().await;

    let q = quota(&alice).await;
    assert_eq!(q["storage_bytes_limit"], 25 * GIB, "{q}");
    assert_eq!(q["storage_bytes_used"], 0, "{q}");
    assert_eq!(q["servers_limit"], -1, "{q}");
    assert_eq!(q["concurrent_jobs_limit"], 100, "the default: {q}");

    // Disks count their capacity, not the blocks they take.
    let big = id(
        &try_create_disk(&alice, vdc, "big", DISK_20GB)
            .await
            .unwrap(),
        "disk_id",
    );
    assert_eq!(quota(&alice).await["storage_bytes_used"], 20 * GIB);
    let err = try_create_disk(&alice, vdc, "more", DISK_10GB)
        .await
        .unwrap_err();
    assert_exceeded(&err, "storage_bytes");
    assert_eq!(
        err.message,
        "quota storage_bytes exceeded: 32212254720 of 26843545600 bytes would be in use"
    );
    assert_eq!(count(&alice, "ListDisks", vdc).await, 1);

    // A server's disks count.
    let err = try_create_server(&alice, vdc, "web", SERVER_1CPU_1GB, &[DISK_1GB, DISK_20GB])
        .await
        .unwrap_err();
    assert_exceeded(&err, "storage_bytes");
    assert_eq!(count(&alice, "ListServers", vdc).await, 0);
    assert_eq!(count(&alice, "ListDisks", vdc).await, 1);
    // None of the refused calls left a volume file behind.
    let volumes = app.server.data_dir.join("volumes");
    assert_eq!(std::fs::read_dir(&volumes).unwrap().count(), 1);

    // A fetch reserves its offer's size when it is queued; one that does not fit is not.
    let err = alice
        .fail("FetchDisk", fetch_args(&stalling, vdc, DISK_10GB, false))
        .await;
    assert_exceeded(&err, "storage_bytes");
    assert_eq!(jobs(&alice).await, 0, "no job was queued");
    let fetch = id(
        &alice
            .call("FetchDisk", fetch_args(&stalling, vdc, DISK_1GB, true))
            .await,
        "job_id",
    );
    let q = quota(&alice).await;
    assert_eq!(q["storage_bytes_used"], 21 * GIB, "{q}");
    assert_eq!(q["concurrent_jobs_used"], 1, "{q}");
    let small = id(
        &try_create_disk(&alice, vdc, "small", DISK_1GB)
            .await
            .unwrap(),
        "disk_id",
    );
    assert_eq!(quota(&alice).await["storage_bytes_used"], 22 * GIB);

    // An image of a disk would be the disk's capacity.
    let err = alice
        .fail(
            "CreateImage",
            json!({"disk_id": big, "name": "copy", "generate_password": true}),
        )
        .await;
    assert_exceeded(&err, "storage_bytes");
    assert_eq!(jobs(&alice).await, 1, "no job was queued");

    // A snapshot counts its disk's size (what it may come to keep as the disk is rewritten);
    // a clone is a disk of the snapshot's size.
    let err = alice
        .fail(
            "CreateDiskSnapshot",
            json!({"disk_id": big, "name": "before"}),
        )
        .await;
    assert_exceeded(&err, "storage_bytes");
    assert_eq!(
        err.message,
        "quota storage_bytes exceeded: 45097156608 of 26843545600 bytes would be in use"
    );
    let snapshots = alice.call("ListSnapshots", json!({"disk_id": big})).await;
    assert_eq!(snapshots, json!([]), "no snapshot of the refused call");
    let snapshot = id(
        &alice
            .call(
                "CreateDiskSnapshot",
                json!({"disk_id": small, "name": "before"}),
            )
            .await,
        "snapshot_id",
    );
    assert_eq!(quota(&alice).await["storage_bytes_used"], 23 * GIB);
    let clone = alice
        .call(
            "CloneDisk",
            json!({"snapshot_id": snapshot, "new_disk_name": "clone", "vdc_id": vdc}),
        )
        .await;
    assert_eq!(quota(&alice).await["storage_bytes_used"], 24 * GIB);
    assert_eq!(count(&alice, "ListDisks", vdc).await, 3);
    alice
        .call("DeleteDisk", json!({"disk_id": id(&clone, "disk_id")}))
        .await;
    assert_eq!(quota(&alice).await["storage_bytes_used"], 23 * GIB);

    // A cancelled fetch gives its reservation back; a deleted disk its capacity.
    cancel(&alice, fetch).await;
    assert!(private_images(&alice).await.is_empty());
    assert_eq!(quota(&alice).await["storage_bytes_used"], 22 * GIB);
    alice.call("DeleteDisk", json!({"disk_id": big})).await;
    assert_eq!(quota(&alice).await["storage_bytes_used"], 2 * GIB);

    // Own images count their size (once: the job's reservation ends as the image appears).
    let job = id(
        &alice
            .call(
                "CreateImage",
                json!({"disk_id": small, "name": "small image", "generate_password": true}),
            )
            .await,
        "job_id",
    );
    alice.job_ok(job).await;
    assert_eq!(private_images(&alice).await.len(), 1);
    let q = quota(&alice).await;
    assert_eq!(q["storage_bytes_used"], 3 * GIB, "{q}");
    assert_eq!(q["concurrent_jobs_used"], 0, "{q}");

    // Another customer's use is its own.
    let bob = app.bob();
    try_create_disk(&bob, app.bob.vdc_id, "bob's", DISK_20GB)
        .await
        .unwrap();
    assert_eq!(quota(&bob).await["storage_bytes_used"], 20 * GIB);
    assert_eq!(quota(&alice).await["storage_bytes_used"], 3 * GIB);
}
db_test!(storage_quota, storage_quota);

async fn servers_quota_and_overrides(backend: Backend) {
    let app = start(backend, &["--quota-servers", "1"]).await;
    let (alice, vdc) = (app.alice(), app.alice.vdc_id);
    let (bob, bob_vdc) = (app.bob(), app.bob.vdc_id);

    let first = try_create_server(&alice, vdc, "one", SERVER_1CPU_1GB, &[DISK_20GB])
        .await
        .unwrap();
    let err = try_create_server(&alice, vdc, "two", SERVER_1CPU_1GB, &[DISK_20GB])
        .await
        .unwrap_err();
    assert_exceeded(&err, "servers");
    assert_eq!(
        err.message,
        "quota servers exceeded: 2 of 1 servers would be in use"
    );
    assert_eq!(count(&alice, "ListServers", vdc).await, 1);
    assert_eq!(
        count(&alice, "ListDisks", vdc).await,
        1,
        "no disk of the refused server"
    );

    // An override raises the default for one customer.
    let printed = set_quota(&app, &app.alice.email, &["--servers", "3"]);
    assert!(printed.contains("servers=3\n"), "{printed}");
    assert!(printed.contains("storage_bytes=default\n"), "{printed}");
    let second = try_create_server(&alice, vdc, "two", SERVER_1CPU_1GB, &[DISK_20GB])
        .await
        .unwrap();
    let q = quota(&alice).await;
    assert_eq!(
        (&q["servers_limit"], &q["servers_used"]),
        (&json!(3), &json!(2))
    );
    assert_eq!(q["storage_bytes_used"], 40 * GIB, "{q}");

    // Others keep the default.
    try_create_server(&bob, bob_vdc, "one", SERVER_1CPU_1GB, &[DISK_20GB])
        .await
        .unwrap();
    let err = try_create_server(&bob, bob_vdc, "two", SERVER_1CPU_1GB, &[DISK_1GB])
        .await
        .unwrap_err();
    assert_exceeded(&err, "servers");

    // An override lowers a default (here: no limit).
    set_quota(&app, &app.bob.email, &["--storage-bytes", "10G"]);
    let err = try_create_disk(&bob, bob_vdc, "data", DISK_1GB)
        .await
        .unwrap_err();
    assert_eq!(
        err.message,
        "quota storage_bytes exceeded: 22548578304 of 10737418240 bytes would be in use"
    );
    assert_eq!(count(&bob, "ListDisks", bob_vdc).await, 1);
    let printed = set_quota(&app, &app.bob.email, &["--servers", "unlimited"]);
    assert!(printed.contains("servers=unlimited\n"), "{printed}");
    assert!(printed.contains("storage_bytes=10737418240\n"), "{printed}");
    assert_eq!(quota(&bob).await["servers_limit"], -1);
    let err = try_create_server(&bob, bob_vdc, "two", SERVER_1CPU_1GB, &[DISK_1GB])
        .await
        .unwrap_err();
    assert_exceeded(&err, "storage_bytes");
    set_quota(&app, &app.bob.email, &["--storage-bytes", "unlimited"]);
    try_create_server(&bob, bob_vdc, "two", SERVER_1CPU_1GB, &[DISK_1GB])
        .await
        .unwrap();
    assert_eq!(quota(&bob).await["servers_used"], 2);

    // Unset: back to the default, which alice is now over; destroying servers brings the use
    // down.
    let printed = set_quota(&app, &app.alice.email, &["--unset", "servers"]);
    assert!(printed.contains("servers=default\n"), "{printed}");
    let q = quota(&alice).await;
    assert_eq!(
        (&q["servers_limit"], &q["servers_used"]),
        (&json!(1), &json!(2))
    );
    let err = try_create_server(&alice, vdc, "three", SERVER_1CPU_1GB, &[DISK_1GB])
        .await
        .unwrap_err();
    assert_eq!(
        err.message,
        "quota servers exceeded: 3 of 1 servers would be in use"
    );
    for server in [&first, &second] {
        let job = alice
            .call(
                "DestroyServer",
                json!({"server_id": id(server, "server_id")}),
            )
            .await;
        alice.job_ok(id(&job, "job_id")).await;
    }
    let q = quota(&alice).await;
    assert_eq!(
        (&q["servers_used"], &q["storage_bytes_used"]),
        (&json!(0), &json!(0))
    );
    try_create_server(&alice, vdc, "three", SERVER_1CPU_1GB, &[DISK_1GB])
        .await
        .unwrap();

    // The command line refuses what it cannot apply.
    for (email, args) in [
        ("nobody@example.com", &["--servers", "2"][..]),
        (app.alice.email.as_str(), &["--unset", "disks"][..]),
        (app.alice.email.as_str(), &["--servers", "lots"][..]),
        (app.alice.email.as_str(), &["--storage-bytes", "2X"][..]),
        (
            app.alice.email.as_str(),
            &["--servers", "2", "--unset", "servers"][..],
        ),
    ] {
        let err = try_set_quota(&app, email, args).unwrap_err();
        assert!(!err.is_empty(), "{args:?}");
    }
    assert_eq!(quota(&alice).await["servers_limit"], 1);
}
db_test!(servers_quota_and_overrides, servers_quota_and_overrides);

async fn start_server(api: &Api, server: i64) -> Result<i64, ApiError> {
    api.try_call("StartServer", json!({"server_id": server}))
        .await
        .map(|v| id(&v, "job_id"))
}

async fn server_status(api: &Api, server: i64) -> i64 {
    id(
        &api.call("GetServer", json!({"server_id": server})).await,
        "status",
    )
}

async fn running_vcpus_and_memory(backend: Backend) {
    let app = start(backend, &["--quota-running-vcpus", "2"]).await;
    let (alice, vdc) = (app.alice(), app.alice.vdc_id);
    let big = try_create_server(&alice, vdc, "big", SERVER_2CPU_2GB, &[DISK_1GB])
        .await
        .unwrap();
    let small = try_create_server(&alice, vdc, "small", SERVER_1CPU_512MB, &[DISK_1GB])
        .await
        .unwrap();
    let (big, small) = (id(&big, "server_id"), id(&small, "server_id"));
    // Stopped servers run nothing.
    assert_eq!(quota(&alice).await["running_vcpus_used"], 0);

    alice.job_ok(start_server(&alice, big).await.unwrap()).await;
    let q = quota(&alice).await;
    assert_eq!(q["running_vcpus_limit"], 2, "{q}");
    assert_eq!(q["running_vcpus_used"], 2, "{q}");
    assert_eq!(q["running_memory_mb_used"], 2048, "{q}");

    let err = start_server(&alice, small).await.unwrap_err();
    assert_exceeded(&err, "running_vcpus");
    assert_eq!(
        err.message,
        "quota running_vcpus exceeded: 3 of 2 vCPUs would be in use"
    );
    assert_eq!(jobs(&alice).await, 1, "no job was queued");
    assert_eq!(server_status(&alice, small).await, 5, "still stopped");

    // Stopping gives the vCPUs back.
    let stop = alice
        .call("StopServer", json!({"server_id": big, "stop_method": 2}))
        .await;
    alice.job_ok(id(&stop, "job_id")).await;
    assert_eq!(quota(&alice).await["running_vcpus_used"], 0);
    alice
        .job_ok(start_server(&alice, small).await.unwrap())
        .await;
    let q = quota(&alice).await;
    assert_eq!(
        (&q["running_vcpus_used"], &q["running_memory_mb_used"]),
        (&json!(1), &json!(512))
    );

    // Memory, set for this customer.
    set_quota(
        &app,
        &app.alice.email,
        &["--running-vcpus", "4", "--running-memory", "1G"],
    );
    let err = start_server(&alice, big).await.unwrap_err();
    assert_exceeded(&err, "running_memory_mb");
    assert_eq!(
        err.message,
        "quota running_memory_mb exceeded: 2560 of 1024 MiB would be in use"
    );
    assert_eq!(server_status(&alice, big).await, 5);
    set_quota(&app, &app.alice.email, &["--unset", "running-memory"]);
    alice.job_ok(start_server(&alice, big).await.unwrap()).await;
    let q = quota(&alice).await;
    assert_eq!(q["running_vcpus_used"], 3, "{q}");
    assert_eq!(q["running_memory_mb_limit"], -1, "{q}");
}
db_test!(running_vcpus_and_memory, running_vcpus_and_memory);

async fn concurrent_jobs(backend: Backend) {
    let app = start(
        backend,
        &[
            "--quota-concurrent-jobs",
            "1",
            "--allow-fetch-from",
            "127.0.0.1/32",
        ],
    )
    .await;
    let (alice, vdc) = (app.alice(), app.alice.vdc_id);
    let stalling = stalling_url().await;
    let server = try_create_server(&alice, vdc, "web", SERVER_1CPU_1GB, &[DISK_1GB])
        .await
        .unwrap();
    let disk = id(&server["disks"][0], "disk_id");
    let server = id(&server, "server_id");

    let fetch = id(
        &alice
            .call("FetchDisk", fetch_args(&stalling, vdc, DISK_1GB, false))
            .await,
        "job_id",
    );
    let q = quota(&alice).await;
    assert_eq!(
        (&q["concurrent_jobs_limit"], &q["concurrent_jobs_used"]),
        (&json!(1), &json!(1))
    );
    let err = start_server(&alice, server).await.unwrap_err();
    assert_exceeded(&err, "concurrent_jobs");
    assert_eq!(
        err.message,
        "quota concurrent_jobs exceeded: 2 of 1 unfinished jobs would be in use"
    );
    assert_eq!(server_status(&alice, server).await, 5);
    let err = alice
        .fail("FetchDisk", fetch_args(&stalling, vdc, DISK_1GB, false))
        .await;
    assert_exceeded(&err, "concurrent_jobs");
    let err = alice
        .fail(
            "CreateImage",
            json!({"disk_id": disk, "name": "copy", "generate_password": true}),
        )
        .await;
    assert_exceeded(&err, "concurrent_jobs");
    assert_eq!(jobs(&alice).await, 1, "no job was queued");

    // A finished job frees its place.
    cancel(&alice, fetch).await;
    assert_eq!(quota(&alice).await["concurrent_jobs_used"], 0);
    alice
        .job_ok(start_server(&alice, server).await.unwrap())
        .await;

    // Stopping (and destroying) give resources back, and are never refused.
    let fetch = id(
        &alice
            .call("FetchDisk", fetch_args(&stalling, vdc, DISK_1GB, false))
            .await,
        "job_id",
    );
    let stop = alice
        .call("StopServer", json!({"server_id": server, "stop_method": 2}))
        .await;
    alice.job_ok(id(&stop, "job_id")).await;
    cancel(&alice, fetch).await;
    assert_eq!(jobs(&alice).await, 4);
}
db_test!(concurrent_jobs, concurrent_jobs);

async fn concurrent_calls_never_exceed_a_quota(backend: Backend) {
    let app = start(backend, &["--quota-storage-bytes", "3G"]).await;
    let (alice, vdc) = (app.alice(), app.alice.vdc_id);
    // Authenticated once, so that the calls are not spread out by password checks.
    quota(&alice).await;
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..8 {
        let alice = alice.clone();
        calls.spawn(
            async move { try_create_disk(&alice, vdc, &format!("disk {n}"), DISK_1GB).await },
        );
    }
    let (mut made, mut refused) = (0, 0);
    while let Some(result) = calls.join_next().await {
        match result.unwrap() {
            Ok(_) => made += 1,
            Err(err) => {
                assert_exceeded(&err, "storage_bytes");
                refused += 1;
            }
        }
    }
    assert_eq!((made, refused), (3, 5));
    assert_eq!(count(&alice, "ListDisks", vdc).await, 3);
    assert_eq!(quota(&alice).await["storage_bytes_used"], 3 * GIB);
    // The refused calls' volume files are gone.
    let volumes = app.server.data_dir.join("volumes");
    assert_eq!(std::fs::read_dir(&volumes).unwrap().count(), 3);
}
db_test!(
    concurrent_calls_never_exceed_a_quota,
    concurrent_calls_never_exceed_a_quota
);

async fn min_free_space(backend: Backend) {
    let app = start(backend, &["--min-free-space", "1000P"]).await;
    let (alice, vdc) = (app.alice(), app.alice.vdc_id);
    let staging = app.server.data_dir.join("staging");

    for make_image in [false, true] {
        let args = fetch_args("http://images.example.com/a.img", vdc, DISK_1GB, make_image);
        let job = alice
            .wait_job(id(&alice.call("FetchDisk", args).await, "job_id"))
            .await;
        assert_eq!(job["status"], 3, "{job}");
        assert_eq!(job["error_code"], "INSUFFICIENT_STORAGE", "{job}");
        let message = job["error_message"].as_str().unwrap();
        assert!(message.contains("nearly full"), "{message}");
        assert!(message.contains("nothing was written"), "{message}");
    }
    assert_eq!(count(&alice, "ListDisks", vdc).await, 0);
    assert!(private_images(&alice).await.is_empty());
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);

    // Disks are thin and made at once; copying one into an image is refused.
    let disk = id(
        &try_create_disk(&alice, vdc, "data", DISK_1GB)
            .await
            .unwrap(),
        "disk_id",
    );
    let job = alice
        .call(
            "CreateImage",
            json!({"disk_id": disk, "name": "copy", "generate_password": true}),
        )
        .await;
    let job = alice.wait_job(id(&job, "job_id")).await;
    assert_eq!(job["error_code"], "INSUFFICIENT_STORAGE", "{job}");
    assert!(private_images(&alice).await.is_empty());
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    assert_eq!(quota(&alice).await["storage_bytes_used"], GIB);
    // The disk is no longer pinned by the job.
    alice.call("DeleteDisk", json!({"disk_id": disk})).await;
}
db_test!(min_free_space, min_free_space);

#[test]
fn bad_quota_values_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, value, says) in [
        ("--quota-storage-bytes", "2X", "is not a size"),
        ("--quota-servers", "lots", "is not a whole number"),
        ("--min-free-space", "plenty", "is not a size"),
    ] {
        let out = Command::new(crate::support::binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args([flag, value])
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(flag) && stderr.contains(says), "{stderr}");
    }
}

async fn vlans(api: &Api, vdc: i64) -> usize {
    count(api, "ListVLANs", vdc).await
}

async fn try_create_vlan(api: &Api, vdc: i64, name: &str) -> Result<Value, ApiError> {
    api.try_call("CreateVLAN", json!({"vdc_id": vdc, "vlan_name": name}))
        .await
}

async fn try_forward(api: &Api, server: i64, port: i64) -> Result<Value, ApiError> {
    api.try_call(
        "AddPortForward",
        json!({"server_id": server, "guest_port": port}),
    )
    .await
}

async fn forwards(api: &Api, server: i64) -> usize {
    api.call("ListPortForwards", json!({"server_id": server}))
        .await
        .as_array()
        .unwrap()
        .len()
}

/// A server of `api`'s on `vlan`, with one 1 GB disk.
async fn server_on(api: &Api, vdc: i64, vlan: i64, name: &str) -> i64 {
    let server = api
        .call(
            "CreateServer",
            json!({"vdc_id": vdc, "vlan_id": vlan, "server_name": name, "image_id": BLANK_IMAGE,
                   "server_productoffer_id": SERVER_1CPU_1GB, "disk_productoffer_ids": [DISK_1GB]}),
        )
        .await;
    id(&server, "server_id")
}

async fn vlan_and_port_forward_quotas(backend: Backend) {
    let app = start(
        backend,
        &["--quota-vlans", "2", "--quota-port-forwards", "3"],
    )
    .await;
    let (alice, vdc) = (app.alice(), app.alice.vdc_id);
    let (bob, bob_vdc) = (app.bob(), app.bob.vdc_id);

    // VLANs: the third is refused and not made; others' VLANs do not count.
    let lan = id(
        &try_create_vlan(&alice, vdc, "one").await.unwrap(),
        "vlan_id",
    );
    try_create_vlan(&alice, vdc, "two").await.unwrap();
    let err = try_create_vlan(&alice, vdc, "three").await.unwrap_err();
    assert_exceeded(&err, "vlans");
    assert_eq!(
        err.message,
        "quota vlans exceeded: 3 of 2 VLANs would be in use"
    );
    assert_eq!(vlans(&alice, vdc).await, 2, "no VLAN of the refused call");
    let q = quota(&alice).await;
    assert_eq!(
        (&q["vlans_limit"], &q["vlans_used"]),
        (&json!(2), &json!(2))
    );
    try_create_vlan(&bob, bob_vdc, "one").await.unwrap();
    try_create_vlan(&bob, bob_vdc, "two").await.unwrap();
    // In another VDC of hers, too.
    let other_vdc = id(
        &alice.call("CreateVDC", json!({"vdc_name": "other"})).await,
        "vdc_id",
    );
    assert_exceeded(
        &try_create_vlan(&alice, other_vdc, "three")
            .await
            .unwrap_err(),
        "vlans",
    );
    assert_eq!(vlans(&alice, other_vdc).await, 0);
    // Raised for her: the third goes through; deleting one gives its place back.
    let printed = set_quota(&app, &app.alice.email, &["--vlans", "3"]);
    assert!(printed.contains("vlans=3\n"), "{printed}");
    let third = id(
        &try_create_vlan(&alice, vdc, "three").await.unwrap(),
        "vlan_id",
    );
    assert_exceeded(
        &try_create_vlan(&alice, vdc, "four").await.unwrap_err(),
        "vlans",
    );
    alice.call("DeleteVLAN", json!({"vlan_id": third})).await;
    try_create_vlan(&alice, vdc, "four").await.unwrap();
    assert_eq!(quota(&alice).await["vlans_used"], 3);

    // Port forwards: counted over all the customer's servers.
    let web = server_on(&alice, vdc, lan, "web").await;
    let db = server_on(&alice, vdc, lan, "db").await;
    try_forward(&alice, web, 22).await.unwrap();
    try_forward(&alice, web, 80).await.unwrap();
    try_forward(&alice, db, 22).await.unwrap();
    let err = try_forward(&alice, db, 5432).await.unwrap_err();
    assert_exceeded(&err, "port_forwards");
    assert_eq!(
        err.message,
        "quota port_forwards exceeded: 4 of 3 port forwards would be in use"
    );
    assert_exceeded(
        &try_forward(&alice, web, 443).await.unwrap_err(),
        "port_forwards",
    );
    assert_eq!(
        (forwards(&alice, web).await, forwards(&alice, db).await),
        (2, 1)
    );
    let q = quota(&alice).await;
    assert_eq!(
        (&q["port_forwards_limit"], &q["port_forwards_used"]),
        (&json!(3), &json!(3))
    );
    // Bob's are his own.
    let bob_lan = id(
        &bob.call("ListVLANs", json!({"vdc_id": bob_vdc})).await[0],
        "vlan_id",
    );
    let bobs = server_on(&bob, bob_vdc, bob_lan, "web").await;
    try_forward(&bob, bobs, 22).await.unwrap();
    assert_eq!(quota(&bob).await["port_forwards_used"], 1);
    // Raised, then back to the default.
    set_quota(&app, &app.alice.email, &["--port-forwards", "unlimited"]);
    try_forward(&alice, db, 5432).await.unwrap();
    assert_eq!(quota(&alice).await["port_forwards_limit"], -1);
    let printed = set_quota(&app, &app.alice.email, &["--unset", "port-forwards"]);
    assert!(printed.contains("port_forwards=default\n"), "{printed}");
    assert_exceeded(
        &try_forward(&alice, web, 443).await.unwrap_err(),
        "port_forwards",
    );
    assert_eq!(quota(&alice).await["port_forwards_used"], 4);
}
db_test!(vlan_and_port_forward_quotas, vlan_and_port_forward_quotas);

async fn vlans_and_forwards_have_bounded_defaults(backend: Backend) {
    let app = start(backend, &[]).await;
    let q = quota(&app.alice()).await;
    assert_eq!(
        (&q["vlans_limit"], &q["vlans_used"]),
        (&json!(16), &json!(0))
    );
    assert_eq!(
        (&q["port_forwards_limit"], &q["port_forwards_used"]),
        (&json!(64), &json!(0))
    );
}
db_test!(
    vlans_and_forwards_have_bounded_defaults,
    vlans_and_forwards_have_bounded_defaults
);

async fn concurrent_vlans_and_forwards_never_exceed_their_quotas(backend: Backend) {
    let app = start(
        backend,
        &["--quota-vlans", "3", "--quota-port-forwards", "3"],
    )
    .await;
    let (alice, vdc) = (app.alice(), app.alice.vdc_id);
    // Authenticated once, so that the calls are not spread out by password checks.
    quota(&alice).await;
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..8 {
        let alice = alice.clone();
        calls.spawn(async move { try_create_vlan(&alice, vdc, &format!("lan {n}")).await });
    }
    let (mut made, mut refused) = (Vec::new(), 0);
    while let Some(result) = calls.join_next().await {
        match result.unwrap() {
            Ok(vlan) => made.push(vlan["subnet"].as_str().unwrap().to_string()),
            Err(err) => {
                assert_exceeded(&err, "vlans");
                refused += 1;
            }
        }
    }
    assert_eq!((made.len(), refused), (3, 5));
    made.sort();
    made.dedup();
    assert_eq!(made.len(), 3, "each VLAN a subnet of its own");
    assert_eq!(vlans(&alice, vdc).await, 3);

    let lan = id(
        &alice.call("ListVLANs", json!({"vdc_id": vdc})).await[0],
        "vlan_id",
    );
    let mut servers = Vec::new();
    for name in ["a", "b"] {
        servers.push(server_on(&alice, vdc, lan, name).await);
    }
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..8 {
        let (alice, server) = (alice.clone(), servers[n % 2]);
        calls.spawn(async move { try_forward(&alice, server, 1000 + n as i64).await });
    }
    let (mut made, mut refused) = (0, 0);
    while let Some(result) = calls.join_next().await {
        match result.unwrap() {
            Ok(_) => made += 1,
            Err(err) => {
                assert_exceeded(&err, "port_forwards");
                refused += 1;
            }
        }
    }
    assert_eq!((made, refused), (3, 5));
    assert_eq!(
        forwards(&alice, servers[0]).await + forwards(&alice, servers[1]).await,
        3
    );
}
db_test!(
    concurrent_vlans_and_forwards_never_exceed_their_quotas,
    concurrent_vlans_and_forwards_never_exceed_their_quotas
);

async fn snapshots(api: &Api, disk: i64) -> usize {
    api.call("ListSnapshots", json!({"disk_id": disk}))
        .await
        .as_array()
        .unwrap()
        .len()
}

async fn try_snapshot(api: &Api, disk: i64, name: &str) -> Result<Value, ApiError> {
    api.try_call("CreateDiskSnapshot", json!({"disk_id": disk, "name": name}))
        .await
}

async fn snapshots_count_in_storage_and_are_bounded_per_disk(backend: Backend) {
    let app = start(
        backend,
        &[
            "--quota-storage-bytes",
            "3G",
            "--max-snapshots-per-disk",
            "3",
        ],
    )
    .await;
    let (alice, vdc) = (app.alice(), app.alice.vdc_id);
    let disk = id(
        &try_create_disk(&alice, vdc, "data", DISK_1GB)
            .await
            .unwrap(),
        "disk_id",
    );
    assert_eq!(quota(&alice).await["storage_bytes_used"], GIB);

    // Each snapshot counts the disk's size: what it may come to keep as the disk is rewritten.
    let first = try_snapshot(&alice, disk, "one").await.unwrap();
    assert_eq!(first["size"], GIB, "{first}");
    assert_eq!(quota(&alice).await["storage_bytes_used"], 2 * GIB);
    try_snapshot(&alice, disk, "two").await.unwrap();
    assert_eq!(quota(&alice).await["storage_bytes_used"], 3 * GIB);
    let err = try_snapshot(&alice, disk, "three").await.unwrap_err();
    assert_exceeded(&err, "storage_bytes");
    assert_eq!(
        err.message,
        "quota storage_bytes exceeded: 4294967296 of 3221225472 bytes would be in use"
    );
    assert_eq!(
        snapshots(&alice, disk).await,
        2,
        "no snapshot of the refused call"
    );
    assert_eq!(quota(&alice).await["storage_bytes_used"], 3 * GIB);
    // Nor a disk that would not fit beside them.
    assert_exceeded(
        &try_create_disk(&alice, vdc, "more", DISK_1GB)
            .await
            .unwrap_err(),
        "storage_bytes",
    );

    // Raised: the third is made; the disk's own bound then refuses a fourth (a fixed number
    // of layers per disk, not a quota).
    set_quota(&app, &app.alice.email, &["--storage-bytes", "10G"]);
    try_snapshot(&alice, disk, "three").await.unwrap();
    assert_eq!(quota(&alice).await["storage_bytes_used"], 4 * GIB);
    let err = try_snapshot(&alice, disk, "four").await.unwrap_err();
    assert_eq!(
        (err.code.as_str(), err.status),
        ("LIMIT_EXCEEDED", 429),
        "{err:?}"
    );
    assert!(
        err.message
            .contains("has 3 snapshots, the most a disk may have"),
        "{err:?}"
    );
    assert_eq!(snapshots(&alice, disk).await, 3);
    assert_eq!(quota(&alice).await["storage_bytes_used"], 4 * GIB);
    // Another disk has its own.
    let other = id(
        &try_create_disk(&alice, vdc, "other", DISK_1GB)
            .await
            .unwrap(),
        "disk_id",
    );
    try_snapshot(&alice, other, "one").await.unwrap();
    assert_eq!(quota(&alice).await["storage_bytes_used"], 6 * GIB);

    // Deleting a snapshot gives back its place and its bytes; deleting the disk, all of them.
    alice
        .call(
            "DeleteSnapshot",
            json!({"snapshot_id": id(&first, "snapshot_id")}),
        )
        .await;
    assert_eq!(quota(&alice).await["storage_bytes_used"], 5 * GIB);
    try_snapshot(&alice, disk, "four").await.unwrap();
    alice.call("DeleteDisk", json!({"disk_id": disk})).await;
    assert_eq!(quota(&alice).await["storage_bytes_used"], 2 * GIB);
}
db_test!(
    snapshots_count_in_storage_and_are_bounded_per_disk,
    snapshots_count_in_storage_and_are_bounded_per_disk
);
