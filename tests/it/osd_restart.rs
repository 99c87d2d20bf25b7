//! A Ceph OSD restarted during RBD work (issue 22), on a cluster of the test's own whose OSD
//! keeps its data on a file (`scripts/ceph-test-cluster.sh --bluestore`): the OSD is killed
//! and started again while a fetch into RBD runs and a disk is cloned. The server keeps
//! answering, the fetch and the clone either succeed or fail with a typed error (and succeed
//! when made again), the data written before the restart is intact, and the pool and the
//! database agree (`extility verify --storage rbd`).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::ceph::PrivateCeph;
use crate::support::fetch_disk::{allowing, fetch, fetch_args, md5_hex, sparse_image};
use crate::support::image_server::{ImageServer, Served};
use crate::support::{Backend, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_osd_restart_during_fetches_and_clones_loses_nothing() {
    let (ceph, pool) = tokio::task::spawn_blocking(|| {
        let ceph = PrivateCeph::start();
        let pool = ceph.new_pool();
        (ceph, pool)
    })
    .await
    .unwrap();
    let mut options = allowing("127.0.0.0/8");
    options.args.extend(ceph.server_args(&pool));
    let app = TestApp::start_with(Backend::Postgres, options).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let images = ImageServer::start().await;

    // A disk and its snapshot, made before the restart.
    let (base_image, _) = sparse_image(4 << 20, 3, 31);
    let base_url = images.put_data("base.img", base_image.clone());
    let base_job = fetch(&alice, fetch_args(&base_url, vdc, "base")).await;
    let base = alice.job_ok(base_job).await;
    let base_disk = base["item_id"].as_i64().unwrap();
    let snapshot = alice
        .call(
            "CreateDiskSnapshot",
            json!({"disk_id": base_disk, "name": "before"}),
        )
        .await["snapshot_id"]
        .as_i64()
        .unwrap();

    // A slow fetch in flight when the OSD dies.
    let (image, _) = sparse_image(8 << 20, 2, 32);
    images.put(
        "slow.img",
        Served {
            data: image.clone().into(),
            pace: Some((256 << 10, Duration::from_millis(40))),
            ..Default::default()
        },
    );
    let mut args = fetch_args(&images.url("slow.img"), vdc, "during");
    args["checksum"] = json!(md5_hex(&image));
    let job_id = fetch(&alice, args.clone()).await;
    alice.job_until(job_id, |j| j["bytes_done"] != 0).await;
    ceph.restart_osd();

    // The server answers at once (its database is not Ceph's).
    let started = Instant::now();
    alice.call("ListVDCs", json!({})).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    // A clone while the OSD comes back: made, or refused with a typed error.
    let clone = |name: &'static str| {
        let alice = alice.clone();
        async move {
            alice
                .try_call(
                    "CloneDisk",
                    json!({"snapshot_id": snapshot, "new_disk_name": name, "vdc_id": vdc}),
                )
                .await
        }
    };
    let cloned = match clone("clone-during").await {
        Ok(disk) => {
            eprintln!("the clone made during the restart succeeded");
            disk
        }
        Err(err) => {
            eprintln!("the clone made during the restart failed: {err:?}");
            assert_ne!(err.code, "INTERNAL_ERROR", "{err:?}");
            clone("clone-after").await.unwrap()
        }
    };
    // The fetch ends by itself, either way; made again it succeeds.
    let job = alice.wait_job(job_id).await;
    eprintln!(
        "the fetch running during the restart ended with status {} {}",
        job["status"], job["error_code"]
    );
    match job["status"].as_i64() {
        Some(1) => {}
        Some(3) => {
            assert_ne!(job["error_code"], "INTERNAL_ERROR", "{job}");
            alice.job_ok(fetch(&alice, args).await).await;
        }
        _ => panic!("the fetch did not end: {job}"),
    }
    assert_eq!(ceph.osd_restarts(), 1);

    // The bytes are what they were: the clone holds the base image, the fetched disk its own.
    let db = crate::support::server_db::ServerDb::open(&app.server).await;
    let disks = alice.call("ListDisks", json!({"vdc_id": vdc})).await;
    let during = disks
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["disk_name"] == "during")
        .unwrap_or_else(|| panic!("no fetched disk: {disks}"));
    let volume = db.of_disk(during["disk_id"].as_i64().unwrap()).await;
    assert!(volume.read(0, image.len() as u64) == image);
    let volume = db.of_disk(cloned["disk_id"].as_i64().unwrap()).await;
    assert!(volume.read(0, base_image.len() as u64) == base_image);

    // Nothing half-made in the pool: every image has its row and every row its image.
    let mut verify = vec!["verify"];
    let storage = ceph.server_args(&pool);
    verify.extend(storage.iter().map(String::as_str));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = app.server.cli(&verify);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(app);
    drop(ceph);
}
