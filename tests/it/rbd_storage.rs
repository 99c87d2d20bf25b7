//! Storage on Ceph RBD, on the test run's real cluster (PostgreSQL, as a cluster of nodes
//! runs): images are flat images with a protected snapshot per size of clone, and disks made
//! from them are RBD clones of one (never resized); CreateImage stages its copy in an image
//! of its own, which cancelling and a kill -9 of the server never leave behind; the orphan
//! sweep deletes only old volume images no row names; a staging image left under its name is
//! replaced and its writer cut off. (Fetch, snapshots, revert, deleting images under clones,
//! and booting from RBD run on RBD in their own modules, through `storage_test!`; clones
//! against librbd's in `rbd_clones::`.)

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::image_jobs::{cancel_within_two_seconds, copying};
use crate::support::catalogue::{DISK_1GB, DISK_1GB_SIZE, DISK_20GB, DISK_20GB_SIZE};
use crate::support::ceph;
use crate::support::images::{create_image, image_ids, make_image};
use crate::support::server_db::{RbdPool, ServerDb, Volume};
use crate::support::{Backend, GIB, MIB, ServerOptions, Store, TestApp, id};

/// RBD allocates in objects of this size.
const OBJECT: u64 = 4 * MIB;

async fn rbd_app(options: ServerOptions) -> (TestApp, ServerDb) {
    let app = TestApp::start_on_with(Backend::Postgres, Store::Rbd, options).await;
    let db = ServerDb::open(&app.server).await;
    (app, db)
}

fn pool(db: &ServerDb) -> RbdPool {
    db.rbd().expect("an RBD server").clone()
}

fn spec(pool: &RbdPool, image: &str) -> String {
    format!("{}/{image}", pool.pool)
}

fn info(pool: &RbdPool, volume: &Volume) -> Value {
    volume.rbd_json(pool, "info")
}

fn snapshots(pool: &RbdPool, image: &str) -> Value {
    serde_json::from_str(&ceph::cluster().rbd(&[
        "snap",
        "ls",
        "--format",
        "json",
        &spec(pool, image),
    ]))
    .unwrap()
}

fn name(volume: &Volume) -> String {
    volume.path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_protected_snapshots_and_disks_are_clones() {
    let (app, db) = rbd_app(ServerOptions::default()).await;
    let pool = pool(&db);
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let source = alice
        .call(
            "CreateDisk",
            json!({"vdc_id": vdc, "name": "source", "disk_productoffer_id": DISK_1GB,
                   "image_id": 0}),
        )
        .await;
    let source = id(&source, "disk_id");
    let source_volume = db.of_disk(source).await;
    assert_eq!(source_volume.allocated(), 0, "a blank disk takes nothing");
    source_volume.write_patterns(&[(0, 64 * 1024, 0xab), (700 * MIB, 4096, 0xcd)]);

    // The image is a flat copy: no parent, only the two objects holding data.
    let image = make_image(&alice, source, "base").await;
    let image_volume = db.of_image(image).await;
    assert_ne!(image_volume, source_volume);
    assert!(info(&pool, &image_volume).get("parent").is_none());
    assert_eq!(image_volume.allocated(), 2 * OBJECT);
    assert_eq!(image_volume.read(0, 64 * 1024), vec![0xab; 64 * 1024]);
    assert_eq!(image_volume.read(700 * MIB, 4096), vec![0xcd; 4096]);

    // A disk of the image is a clone of its protected snapshot, and takes nothing.
    let small = alice
        .call(
            "CreateDisk",
            json!({"vdc_id": vdc, "name": "clone", "disk_productoffer_id": DISK_1GB,
                   "image_id": image}),
        )
        .await;
    let small = db.of_disk(id(&small, "disk_id")).await;
    let parent = &info(&pool, &small)["parent"];
    assert_eq!(parent["pool"], pool.pool.as_str(), "{parent}");
    assert_eq!(parent["image"], name(&image_volume), "{parent}");
    assert_eq!(parent["snapshot"], "clone-base", "{parent}");
    let snaps = snapshots(&pool, &name(&image_volume));
    assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");
    assert_eq!(snaps[0]["name"], "clone-base");
    assert_eq!(snaps[0]["protected"], "true");
    assert_eq!(small.allocated(), 0);
    assert_eq!(small.read(700 * MIB, 4096), vec![0xcd; 4096]);

    // A larger disk of it: a clone of a snapshot of that size (the image's head grown for
    // it and set back), so no clone is ever resized; it reads zeros past the image.
    let large = alice
        .call(
            "CreateDisk",
            json!({"vdc_id": vdc, "name": "large", "disk_productoffer_id": DISK_20GB,
                   "image_id": image}),
        )
        .await;
    let large_id = id(&large, "disk_id");
    let large = db.of_disk(large_id).await;
    assert_eq!(large.virtual_size(), DISK_20GB_SIZE);
    assert_eq!(
        info(&pool, &large)["parent"]["snapshot"],
        format!("clone-base-{DISK_20GB_SIZE}")
    );
    assert_eq!(
        image_volume.virtual_size(),
        DISK_1GB_SIZE,
        "the image's own size"
    );
    assert_eq!(large.read(0, 4096), vec![0xab; 4096]);
    assert_eq!(large.read(5 * GIB, 4096), vec![0; 4096]);
    assert_eq!(large.allocated(), 0);

    // Writes to a clone stay in it.
    large.write_pattern(0, 4096, 0xef);
    assert_eq!(large.read(0, 4096), vec![0xef; 4096]);
    assert_eq!(small.read(0, 4096), vec![0xab; 4096]);
    assert_eq!(image_volume.read(0, 4096), vec![0xab; 4096]);
    assert_eq!(large.allocated(), OBJECT);

    // Deleting the image breaks no clone: its data stays until the last clone goes.
    alice.call("DeleteImage", json!({"image_id": image})).await;
    assert!(image_volume.exists());
    assert_eq!(small.read(700 * MIB, 4096), vec![0xcd; 4096]);
    alice.call("DeleteDisk", json!({"disk_id": large_id})).await;
    assert!(!large.exists());
    assert!(image_volume.exists());
    let disks = alice.call("ListDisks", json!({"vdc_id": vdc})).await;
    let clone_id = disks
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["disk_name"] == "clone")
        .map(|d| id(d, "disk_id"))
        .unwrap();
    alice.call("DeleteDisk", json!({"disk_id": clone_id})).await;
    assert!(
        !image_volume.exists(),
        "the image's data outlived its clones"
    );
    assert_eq!(db.stored(), vec![name(&source_volume)]);
}

/// The disk copied: 1.5 GiB of data, 96 pieces of 16 MiB spread over 20 GB.
const PIECES: u64 = 96;
const PIECE: u64 = 16 * MIB;
const SPACING: u64 = 200 * MIB;

fn piece_byte(i: u64) -> u8 {
    (i % 250) as u8 + 1
}

fn stored(db: &ServerDb) -> BTreeSet<String> {
    db.stored().into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_image_is_staged_and_neither_cancel_nor_a_kill_leaves_anything() {
    let (mut app, db) = rbd_app(ServerOptions::default()).await;
    let alice = app.alice();
    let disk = alice
        .call(
            "CreateDisk",
            json!({"vdc_id": app.alice.vdc_id, "name": "data", "disk_productoffer_id": DISK_20GB,
                   "image_id": 0}),
        )
        .await;
    let disk = id(&disk, "disk_id");
    let writes: Vec<_> = (0..PIECES)
        .map(|i| (i * SPACING, PIECE, piece_byte(i)))
        .collect();
    db.of_disk(disk).await.write_patterns(&writes);
    let images_before = image_ids(&alice).await;
    let before = stored(&db);

    // While it copies, the copy is a staging image named after the job, not a volume.
    let job_id = create_image(&alice, disk, "never made").await;
    let running = alice.job_until(job_id, copying).await;
    let staging = format!("extility-stage-{}", running["job_uuid"].as_str().unwrap());
    let mut expected = before.clone();
    expected.insert(staging);
    assert_eq!(stored(&db), expected, "only the staging image is new");
    cancel_within_two_seconds(&alice, job_id).await;
    assert_eq!(image_ids(&alice).await, images_before);
    // The job ends at once; its partial copy goes right after.
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored(&db) != before {
        assert!(
            Instant::now() < deadline,
            "the partial copy was not removed: {:?}",
            stored(&db)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // kill -9 while it copies: after the restart the job copies again and makes one image.
    let job_id = create_image(&alice, disk, "made despite a crash").await;
    alice.job_until(job_id, copying).await;
    app.server.kill9();
    app.server.restart();
    let alice = app.alice();
    let job = alice.job_ok(job_id).await;
    assert!(
        db.job_attempts(job_id).await >= 2,
        "the kill interrupted it"
    );
    let image = id(&job, "item_id");
    let mut made = image_ids(&alice).await;
    made.retain(|i| !images_before.contains(i));
    assert_eq!(made, vec![image], "exactly one image");
    let volume = db.of_image(image).await;
    for i in [0, PIECES / 2, PIECES - 1] {
        assert_eq!(
            volume.read(i * SPACING + PIECE - 4096, 4096),
            vec![piece_byte(i); 4096],
            "piece {i}"
        );
        assert_eq!(volume.read(i * SPACING + PIECE, 4096), vec![0; 4096]);
    }
    assert_eq!(
        volume.allocated(),
        PIECES * PIECE,
        "only the data's objects"
    );
    assert_eq!(
        stored(&db),
        db.volume_files().await,
        "every image in the pool is a volume: no staging image is left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_orphan_and_stale_staging_images_are_swept() {
    let options = ServerOptions {
        args: vec!["--orphan-sweep-seconds".into(), "1".into()],
        ..Default::default()
    };
    let (mut app, db) = rbd_app(options).await;
    let pool = pool(&db);
    let disk = app
        .alice()
        .call(
            "CreateDisk",
            json!({"vdc_id": app.alice.vdc_id, "name": "kept", "disk_productoffer_id": DISK_1GB,
                   "image_id": 0}),
        )
        .await;
    let kept = db.of_disk(id(&disk, "disk_id")).await;
    let millis = |ago: Duration| {
        (SystemTime::now() - ago)
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    };
    let old = format!(
        "extility-vol-{}-{}",
        millis(Duration::from_secs(2 * 3600)),
        uuid::Uuid::new_v4().simple()
    );
    let young = format!(
        "extility-vol-{}-{}",
        millis(Duration::ZERO),
        uuid::Uuid::new_v4().simple()
    );
    // Old too, and cut short in its making (an OSD lost mid-create): its header is gone, its
    // directory entry and id object are not, so it is listed but cannot be opened.
    let broken = format!(
        "extility-vol-{}-{}",
        millis(Duration::from_secs(2 * 3600)),
        uuid::Uuid::new_v4().simple()
    );
    let stale_staging = format!("extility-stage-{}", uuid::Uuid::new_v4());
    let foreign = "not-ours".to_string();

    app.server.kill9();
    for image in [&old, &young, &broken, &stale_staging, &foreign] {
        ceph::cluster().rbd(&["create", "--size", "1M", &spec(&pool, image)]);
    }
    let header = format!(
        "rbd_header.{}",
        ceph::cluster()
            .rbd(&["info", "--format", "json", &spec(&pool, &broken)])
            .split("\"id\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the image's id")
    );
    let removed = std::process::Command::new("rados")
        .arg("-c")
        .arg(&ceph::cluster().conf)
        .args(["-p", &pool.pool, "rm", &header])
        .status()
        .unwrap();
    assert!(removed.success());
    assert!(stored(&db).contains(&broken), "listed without its header");
    app.server.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = stored(&db);
        if !now.contains(&old) && !now.contains(&broken) && !now.contains(&stale_staging) {
            break;
        }
        assert!(Instant::now() < deadline, "not swept: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(app.server.log_text().contains(&old), "the sweep logs it");
    assert_eq!(
        stored(&db),
        BTreeSet::from([name(&kept), young, foreign]),
        "a young image, another's image and a volume stay"
    );
}

/// Guests must never reach Ceph: the storage reads every address of the cluster's monitors
/// and OSDs from its maps (tenant networks deny them to guests). The test cluster binds all of
/// its daemons to 127.0.0.1, and `ceph.conf` names only the monitor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_names_the_clusters_monitors_and_osds() {
    use extility::storage::Storage;
    let found = tokio::task::spawn_blocking(|| {
        let cluster = ceph::cluster();
        let (storage, _data) = cluster.rbd_storage(&cluster.new_pool());
        storage.service_addresses().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(found, [std::net::IpAddr::from([127, 0, 0, 1])]);
}

/// A staging image an interrupted attempt left under the name, with its writer still alive,
/// is replaced: that writer is cut off (its next write fails), the new one writes, and the
/// pool holds one staging image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staging_image_left_under_its_name_is_replaced_and_its_writer_cut_off() {
    use extility::sparse::Destination;
    use extility::storage::Storage;
    tokio::task::spawn_blocking(|| {
        let cluster = ceph::cluster();
        let pool = cluster.new_pool();
        let (storage, _data) = cluster.rbd_storage(&pool);
        let mut left = storage.create_staging_volume("attempt", 64 * MIB).unwrap();
        left.write_all_at(&[0x11; 4096], 0).unwrap();
        left.writes_done().unwrap();
        let mut again = storage.create_staging_volume("attempt", 64 * MIB).unwrap();
        again.write_all_at(&[0x22; 4096], 0).unwrap();
        again.writes_done().unwrap();
        let mut read = vec![0u8; 4096];
        again.read_at(&mut read, 0).unwrap();
        assert_eq!(read, vec![0x22; 4096]);
        let cut_off = left
            .write_all_at(&[0x33; 4096], 0)
            .and_then(|()| left.writes_done());
        assert!(cut_off.is_err(), "the old writer was blocklisted");
        again.read_at(&mut read, 0).unwrap();
        assert_eq!(read, vec![0x22; 4096], "and wrote nothing more");
        let images = cluster.rbd(&["ls", &pool]);
        assert_eq!(images.lines().count(), 1, "{images}");
    })
    .await
    .unwrap();
}
