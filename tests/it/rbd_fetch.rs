//! FetchDisk into RBD storage, on the test run's real Ceph cluster (PostgreSQL, as a cluster of
//! nodes runs): a raw image streams into a staging image named after the job, never through a
//! local file, so the node's data directory does not grow while it runs; a cancelled streaming
//! fetch leaves no staging image, and neither does a kill -9 in the middle of one, after which
//! the job fetches again and makes one disk. (Every format on RBD: `image_formats::`.)

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::image_jobs::cancel_within_two_seconds;
use crate::support::fetch_disk::{
    allowing, assert_thin_disk_holds, disks, fetch, fetch_args, gzip, md5_hex, sparse_image,
};
use crate::support::image_server::{ImageServer, Served};
use crate::support::server_db::ServerDb;
use crate::support::{Api, Backend, MIB, Store, TestApp, files_in};

async fn rbd_app() -> (TestApp, ServerDb) {
    let app = TestApp::start_on_with(Backend::Postgres, Store::Rbd, allowing("127.0.0.0/8")).await;
    let db = ServerDb::open(&app.server).await;
    (app, db)
}

/// Bytes the files under `dir` take on disk.
fn allocated_under(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => allocated_under(&entry.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// The staging image of a job's first attempt.
async fn staging_image_of(api: &Api, job_id: i64) -> String {
    let job = api.call("GetJob", json!({"job_id": job_id})).await;
    format!("extility-stage-{}", job["job_uuid"].as_str().unwrap())
}

fn ended(job: &Value) -> bool {
    matches!(job["status"].as_i64(), Some(1 | 3 | 4))
}

/// Waits (at most a minute) until the job is running and its staging image is in the pool.
async fn until_streaming(api: &Api, db: &ServerDb, job_id: i64, image: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = api.call("GetJob", json!({"job_id": job_id})).await;
        assert!(
            !ended(&job),
            "the fetch ended before it was seen streaming: {job}"
        );
        if job["bytes_done"].as_i64().unwrap_or(0) > 0 && db.stored().iter().any(|n| n == image) {
            return;
        }
        assert!(Instant::now() < deadline, "never streaming: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_fetch_streams_into_its_staging_image_with_no_local_file() {
    let (app, db) = rbd_app().await;
    let alice = app.alice();
    let server = ImageServer::start().await;
    // 32 MiB, every other block random: 16 MiB of data that gzip cannot shrink, sent at about
    // 12 MB/s, so the fetch is watched for a second or more (each look runs `rbd ls`, which
    // takes a while on a loaded machine: one look while it streams is the evidence asked).
    let (image, data_blocks) = sparse_image(32 * MIB, 2, 23);
    server.put(
        "big.img.gz",
        Served {
            data: gzip(&image).into(),
            pace: Some((128 << 10, Duration::from_millis(10))),
            ..Default::default()
        },
    );
    let staging_dir = app.server.data_dir.join("staging");
    let before = allocated_under(&app.server.data_dir);
    let mut args = fetch_args(&server.url("big.img.gz"), app.alice.vdc_id, "streamed");
    args["checksum"] = json!(md5_hex(&image));
    let job_id = fetch(&alice, args).await;
    let staging_image = staging_image_of(&alice, job_id).await;

    // Watched all along: never a staging file, never the data on the node's disk, and the data
    // going into the staging image in the pool.
    let (mut seen_streaming, mut most) = (0, before);
    let deadline = Instant::now() + Duration::from_secs(120);
    let job = loop {
        let job = alice.call("GetJob", json!({"job_id": job_id})).await;
        let files = files_in(&staging_dir);
        assert!(files.is_empty(), "a staging file on the node: {files:?}");
        most = most.max(allocated_under(&app.server.data_dir));
        if ended(&job) {
            break job;
        }
        if job["bytes_done"].as_i64().unwrap_or(0) > 0 && db.stored().contains(&staging_image) {
            seen_streaming += 1;
        }
        assert!(Instant::now() < deadline, "the fetch never ended: {job}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(job["status"], 1, "{job}");
    assert!(
        seen_streaming >= 1,
        "the image was seen streaming into {staging_image} {seen_streaming} times"
    );
    assert!(
        most - before < 4 * MIB,
        "the data directory grew by {} bytes while 16 MiB of data were fetched",
        most - before
    );

    let disk = alice
        .call("GetDisk", json!({"disk_id": job["item_id"]}))
        .await;
    assert_eq!(disk["source_format"], "raw");
    assert_thin_disk_holds(&app, &disk, &image, data_blocks).await;
    let volume = db.of_disk(disk["disk_id"].as_i64().unwrap()).await;
    assert_eq!(
        db.stored(),
        vec![volume.path.display().to_string()],
        "the staging image became the volume"
    );
    assert!(files_in(&staging_dir).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_cancel_nor_a_kill_of_a_streaming_fetch_leaves_a_staging_image() {
    let (mut app, db) = rbd_app().await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let server = ImageServer::start().await;
    // 8 MiB of random data at about 1.3 MB/s: several seconds of streaming.
    let (image, data_blocks) = sparse_image(8 * MIB, 1, 29);
    server.put(
        "slow.img",
        Served {
            data: image.clone().into(),
            pace: Some((64 << 10, Duration::from_millis(50))),
            ..Default::default()
        },
    );

    // Cancelled while it streams: the job ends at once, its staging image goes right after.
    let job_id = fetch(
        &alice,
        fetch_args(&server.url("slow.img"), vdc, "cancelled"),
    )
    .await;
    let staging_image = staging_image_of(&alice, job_id).await;
    until_streaming(&alice, &db, job_id, &staging_image).await;
    cancel_within_two_seconds(&alice, job_id).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !db.stored().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the cancelled fetch left {:?}",
            db.stored()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(disks(&alice, vdc).await.is_empty());

    // kill -9 while it streams: the dead writer's staging image is removed (its watch cut off
    // first), and the job, claimed again after the restart, makes exactly one disk.
    let mut args = fetch_args(&server.url("slow.img"), vdc, "despite a crash");
    args["checksum"] = json!(md5_hex(&image));
    let job_id = fetch(&alice, args).await;
    let staging_image = staging_image_of(&alice, job_id).await;
    until_streaming(&alice, &db, job_id, &staging_image).await;
    app.server.kill9();
    app.server.restart();
    let alice = app.alice();
    let job = alice.job_ok(job_id).await;
    assert!(
        db.job_attempts(job_id).await >= 2,
        "the kill interrupted it"
    );
    let made = disks(&alice, vdc).await;
    assert_eq!(made.len(), 1, "exactly one disk: {made:?}");
    let disk = alice
        .call("GetDisk", json!({"disk_id": job["item_id"]}))
        .await;
    assert_thin_disk_holds(&app, &disk, &image, data_blocks).await;
    let stored: std::collections::BTreeSet<String> = db.stored().into_iter().collect();
    assert_eq!(
        stored,
        db.volume_files().await,
        "every image in the pool is a volume: no staging image is left"
    );
    assert!(files_in(&app.server.data_dir.join("staging")).is_empty());
}
