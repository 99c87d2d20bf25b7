//! CreateImage as a job: progress while it copies, cancellation (of a raw copy and of a qcow2
//! copy made by qemu-img), finishing after a kill -9 of the server, a resumed job that finds
//! the image it already made, and the sweep of volume files no volume refers to.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::support::catalogue::{DISK_1GB, DISK_20GB, DISK_20GB_SIZE};
use crate::support::images::{Contents, create_image, image_ids, make_image};
use crate::support::server_db::{ServerDb, Volume};
use crate::support::{Api, Backend, MIB, ServerOptions, TestApp, db_test, files_in, id};

/// The disks copied hold 1.5 GiB: 96 pieces of 16 MiB spread over 20 GB, enough for the copy
/// to take a few seconds (about two for a debug build on a 2-core machine), in which the test
/// sees its progress and stops it.
const PIECES: u64 = 96;
const PIECE: u64 = 16 * MIB;
const SPACING: u64 = 200 * MIB;

/// Piece `i`'s bytes: pseudo-random (xorshift, made once), with each 4 KiB block starting
/// with the piece's and the block's number, so a misplaced or missing block shows.
fn piece(i: u64) -> Vec<u8> {
    static RANDOM: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let random = RANDOM.get_or_init(|| {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut bytes = Vec::with_capacity(PIECE as usize);
        while bytes.len() < PIECE as usize {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        bytes
    });
    let mut bytes = random.clone();
    for (block, chunk) in bytes.chunks_mut(4096).enumerate() {
        chunk[..8].copy_from_slice(&i.to_le_bytes());
        chunk[8..16].copy_from_slice(&(block as u64).to_le_bytes());
    }
    bytes
}

/// A blank 20 GB disk of alice's, filled with the pieces (the disk's file is raw).
async fn disk_with_data(app: &TestApp, db: &ServerDb, name: &str) -> i64 {
    let disk = app
        .alice()
        .call(
            "CreateDisk",
            json!({"vdc_id": app.alice.vdc_id, "name": name, "disk_productoffer_id": DISK_20GB,
                   "image_id": 0}),
        )
        .await;
    let disk_id = id(&disk, "disk_id");
    let volume = db.of_disk(disk_id).await;
    assert_eq!(volume.format, "raw");
    for i in 0..PIECES {
        volume.write(i * SPACING, &piece(i));
    }
    disk_id
}

/// The volume reads the pieces where they were written, and zeros after them.
fn assert_holds_the_pieces(volume: &Volume, what: &str) {
    assert_eq!(volume.virtual_size(), DISK_20GB_SIZE, "{what}");
    for i in 0..PIECES {
        assert!(
            volume.read(i * SPACING, PIECE) == piece(i),
            "{what}: piece {i} differs"
        );
        assert_eq!(
            volume.read(i * SPACING + PIECE, 4096),
            vec![0u8; 4096],
            "{what}: zeros after piece {i}"
        );
    }
}

/// The job copies and has reported some progress.
pub(crate) fn copying(job: &Value) -> bool {
    assert_ne!(job["status"], 3, "the job failed: {job}");
    job["status"] == 2 && job["bytes_done"].as_i64().unwrap_or(0) > 0
}

/// Cancels a running job and waits at most two seconds for it to stop.
pub(crate) async fn cancel_within_two_seconds(api: &Api, job_id: i64) {
    api.call("CancelJob", json!({"job_id": job_id})).await;
    let job = api
        .call(
            "WaitForJob",
            json!({"job_id": job_id, "timeout_seconds": 2}),
        )
        .await;
    assert_eq!(job["status"], 4, "the job did not stop within 2 s: {job}");
    assert_eq!(job["error_code"], "CANCELLED", "{job}");
}

/// Waits (at most a minute) until `ready` says yes, looking every 20 ms.
async fn until(ready: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "never saw {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bytes the files in `dir` take on disk.
fn allocated_in(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    files_in(dir)
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// Whether a `qemu-img` process has `path` on its command line.
fn qemu_img_running_on(path: &Path) -> bool {
    let needle = path.to_string_lossy().into_owned().into_bytes();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return false;
    };
    processes.flatten().any(|entry| {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            return false;
        };
        let mut args = cmdline.split(|b| *b == 0);
        let is_qemu_img = args.next().is_some_and(|p| p.ends_with(b"qemu-img"));
        is_qemu_img && args.any(|arg| arg == needle.as_slice())
    })
}

/// Whether `api` lists an image that `before` did not have.
async fn new_images(api: &Api, before: &[i64]) -> Vec<i64> {
    let mut now = image_ids(api).await;
    now.retain(|i| !before.contains(i));
    now
}

/// CreateImage of a disk holding 1.5 GiB reports its progress while it copies (into a
/// staging file), and CancelJob stops it within two seconds leaving nothing: no image, no
/// staging file, no volume file. Then the same for a qcow2 disk (made from an image of the
/// first), whose copy is a `qemu-img convert` that cancelling kills.
async fn create_image_reports_progress_and_can_be_cancelled(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.alice();
    let db = ServerDb::open(&app.server).await;
    let staging = app.server.data_dir.join("staging");
    let volumes = app.server.data_dir.join("volumes");
    let raw_disk = disk_with_data(&app, &db, "raw source").await;
    let images_before = image_ids(&alice).await;
    let volumes_before = files_in(&volumes);

    let job_id = create_image(&alice, raw_disk, "never made").await;
    let running = alice.job_until(job_id, copying).await;
    assert_eq!(running["phase"], "copying", "{running}");
    assert_eq!(running["bytes_total"], DISK_20GB_SIZE, "{running}");
    assert!(
        running["bytes_done"].as_u64().unwrap() < DISK_20GB_SIZE,
        "{running}"
    );
    let progress = running["progress"].as_i64().unwrap();
    assert!((0..100).contains(&progress), "{running}");
    let staged = files_in(&staging);
    assert_eq!(
        staged,
        BTreeSet::from([format!("{}.part", running["job_uuid"].as_str().unwrap())]),
        "the copy goes to the job's staging file"
    );
    assert_eq!(
        files_in(&volumes),
        volumes_before,
        "no volume while copying"
    );

    cancel_within_two_seconds(&alice, job_id).await;
    assert!(new_images(&alice, &images_before).await.is_empty());
    assert!(files_in(&staging).is_empty(), "the partial copy is removed");
    assert_eq!(files_in(&volumes), volumes_before);

    // The disk is free again; an image of it is made to the end, and a disk made from that
    // image is a qcow2 overlay whose data lies in the image.
    let job_id = create_image(&alice, raw_disk, "source of the overlay").await;
    let job = alice.job_ok(job_id).await;
    assert_eq!(job["item_type"], "image", "{job}");
    let image = id(&job, "item_id");
    let overlay = alice
        .call(
            "CreateDisk",
            json!({"vdc_id": app.alice.vdc_id, "name": "overlay",
                   "disk_productoffer_id": DISK_20GB, "image_id": image}),
        )
        .await;
    let overlay = id(&overlay, "disk_id");
    assert_eq!(db.of_disk(overlay).await.format, "qcow2");
    let images_before = image_ids(&alice).await;
    let volumes_before = files_in(&volumes);

    let job_id = create_image(&alice, overlay, "never made either").await;
    let job_uuid = alice.call("GetJob", json!({"job_id": job_id})).await["job_uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let staged = staging.join(format!("{job_uuid}.part"));
    until(
        || qemu_img_running_on(&staged),
        "qemu-img converting into the staging file",
    )
    .await;
    cancel_within_two_seconds(&alice, job_id).await;
    assert!(!qemu_img_running_on(&staged), "qemu-img was stopped");
    assert!(new_images(&alice, &images_before).await.is_empty());
    assert!(files_in(&staging).is_empty(), "the partial copy is removed");
    assert_eq!(files_in(&volumes), volumes_before);
}
db_test!(
    create_image_reports_progress_and_can_be_cancelled,
    create_image_reports_progress_and_can_be_cancelled
);

/// kill -9 of the server while CreateImage copies: after the restart the job copies again
/// and finishes with exactly one image holding the disk's bytes, and no file is left over.
async fn a_killed_server_finishes_the_image_after_restart(backend: Backend) {
    let mut app = TestApp::start(backend).await;
    let db = ServerDb::open(&app.server).await;
    let staging = app.server.data_dir.join("staging");
    let volumes = app.server.data_dir.join("volumes");
    let disk = disk_with_data(&app, &db, "survivor").await;
    let images_before = image_ids(&app.alice()).await;

    let job_id = create_image(&app.alice(), disk, "made despite a crash").await;
    // Killed as soon as the copy has written something, well before it ends.
    until(
        || allocated_in(&staging) > 0,
        "the copy writing its staging file",
    )
    .await;
    app.server.kill9();
    assert_eq!(files_in(&staging).len(), 1);
    app.server.restart();

    let alice = app.alice();
    let job = alice.job_ok(job_id).await;
    assert_eq!(job["item_type"], "image", "{job}");
    assert!(
        db.job_attempts(job_id).await >= 2,
        "the kill interrupted the copy"
    );
    let made = new_images(&alice, &images_before).await;
    assert_eq!(made, vec![id(&job, "item_id")], "exactly one image");
    assert_eq!(db.image_source_job(made[0]).await, Some(job_id));
    let image = db.of_image(made[0]).await;
    assert_eq!(image.format, "raw");
    assert_holds_the_pieces(&image, "the image");
    let data = PIECES * PIECE;
    assert!(
        (data..data + 8 * MIB).contains(&image.allocated()),
        "the image takes {} bytes for {data} bytes of data",
        image.allocated()
    );
    assert!(files_in(&staging).is_empty(), "no staging file left");
    assert_eq!(
        files_in(&volumes),
        db.volume_files().await,
        "every volume file is a volume"
    );
}
db_test!(
    a_killed_server_finishes_the_image_after_restart,
    a_killed_server_finishes_the_image_after_restart
);

/// A CreateImage job whose node died after the image was saved but before the job was
/// recorded as finished reports that image when it runs again, and copies nothing.
async fn a_resumed_job_reports_the_image_it_already_made(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.alice();
    let db = ServerDb::open(&app.server).await;
    let disk = alice
        .call(
            "CreateDisk",
            json!({"vdc_id": app.alice.vdc_id, "name": "small", "disk_productoffer_id": DISK_1GB,
                   "image_id": 0}),
        )
        .await;
    let disk = id(&disk, "disk_id");
    db.of_disk(disk).await.write(0, Contents::BOOT);
    let image = make_image(&alice, disk, "saved before the crash").await;
    let images_before = image_ids(&alice).await;
    let volumes = app.server.data_dir.join("volumes");
    let volumes_before = files_in(&volumes);

    let job_id = db
        .image_job_interrupted_after_commit(app.alice.customer_id, disk, image)
        .await;
    let job = alice.job_ok(job_id).await;
    assert_eq!(job["item_type"], "image", "{job}");
    assert_eq!(job["item_id"], image, "{job}");
    assert!(db.job_attempts(job_id).await >= 2);
    assert_eq!(image_ids(&alice).await, images_before, "no second image");
    assert_eq!(job["bytes_done"], 0, "nothing was copied: {job}");
    assert_eq!(
        files_in(&volumes),
        volumes_before,
        "no volume file was made"
    );
    assert!(files_in(&app.server.data_dir.join("staging")).is_empty());
}
db_test!(
    a_resumed_job_reports_the_image_it_already_made,
    a_resumed_job_reports_the_image_it_already_made
);

fn age(path: &Path, by: Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - by)
        .unwrap();
}

fn plant(path: &Path, old: bool) {
    std::fs::write(path, b"left behind").unwrap();
    if old {
        age(path, Duration::from_secs(2 * 3600));
    }
}

async fn until_gone(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} was not swept",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Volume files that no volume refers to are deleted once they are an hour old: at start
/// (files a crash left) and every `--orphan-sweep-seconds`. Younger ones, and old files that
/// are volumes, stay.
async fn orphan_volume_files_are_swept(backend: Backend) {
    let options = ServerOptions {
        args: vec!["--orphan-sweep-seconds".into(), "1".into()],
        ..Default::default()
    };
    let mut app = TestApp::start_with(backend, options).await;
    let db = ServerDb::open(&app.server).await;
    let disk = app
        .alice()
        .call(
            "CreateDisk",
            json!({"vdc_id": app.alice.vdc_id, "name": "old", "disk_productoffer_id": DISK_1GB,
                   "image_id": 0}),
        )
        .await;
    let old_volume = db.of_disk(id(&disk, "disk_id")).await;
    age(&old_volume.path, Duration::from_secs(48 * 3600));
    let volumes = app.server.data_dir.join("volumes");
    let crashed = volumes.join(format!("{}.raw", uuid::Uuid::new_v4()));
    let young = volumes.join(format!("{}.qcow2", uuid::Uuid::new_v4()));

    app.server.kill9();
    plant(&crashed, true);
    plant(&young, false);
    app.server.restart();
    until_gone(&crashed).await;
    let name = crashed.file_name().unwrap().to_string_lossy().into_owned();
    assert!(app.server.log_text().contains(&name), "the sweep logs it");

    let later = volumes.join(format!("{}.raw", uuid::Uuid::new_v4()));
    plant(&later, true);
    until_gone(&later).await;
    assert!(young.exists(), "a young file stays");
    assert!(old_volume.exists(), "an old volume stays");
    app.alice()
        .call("DeleteDisk", json!({"disk_id": id(&disk, "disk_id")}))
        .await;
    assert!(!old_volume.exists());
}
db_test!(orphan_volume_files_are_swept, orphan_volume_files_are_swept);
