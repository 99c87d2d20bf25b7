//! Disk snapshots over the JSON API: taking them, cloning them into new disks and reverting
//! disks to them, all thin, with what each disk reads checked byte for byte.

use serde_json::json;

use crate::support::catalogue::{BLANK_IMAGE, DISK_1GB, DISK_1GB_SIZE};
use crate::support::images::{boot_disk, create_server, start, stop};
use crate::support::server_db::ServerDb;
use crate::support::{Backend, MIB, Store, TestApp, db_test, id, storage_test};

const BLOCK: u64 = 4096;

fn block(byte: u8) -> Vec<u8> {
    vec![byte; BLOCK as usize]
}

async fn snapshot_clone_and_revert(backend: Backend, store: Store) {
    let app = TestApp::start_on(backend, store).await;
    let (alice, bob) = (app.alice(), app.bob());
    let db = ServerDb::open(&app.server).await;
    let vdc = app.alice.vdc_id;

    // A blank 1 GB disk holding two blocks.
    let disk = alice
        .call(
            "CreateDisk",
            json!({"vdc_id": vdc, "name": "data", "disk_productoffer_id": DISK_1GB, "image_id": 0}),
        )
        .await;
    let disk = id(&disk, "disk_id");
    let original = db.of_disk(disk).await;
    original.write_pattern(0, BLOCK, 0x11);
    original.write_pattern(512 * MIB, BLOCK, 0x12);

    // The snapshot freezes that volume; the disk goes on in a thin overlay on it.
    let snapshot = alice
        .call(
            "CreateDiskSnapshot",
            json!({"disk_id": disk, "name": "before"}),
        )
        .await;
    assert_eq!(snapshot["disk_id"], disk);
    assert_eq!(snapshot["snapshot_name"], "before");
    assert_eq!(snapshot["size"], DISK_1GB_SIZE);
    let snapshot_id = id(&snapshot, "snapshot_id");
    let listed = alice.call("ListSnapshots", json!({"disk_id": disk})).await;
    assert_eq!(listed, json!([snapshot]));
    assert_eq!(db.of_snapshot(snapshot_id).await, original);
    let top = db.of_disk(disk).await;
    // A qcow2 overlay on files; on RBD a clone, which QEMU reads as raw.
    let thin_format = if store == Store::Files {
        "qcow2"
    } else {
        "raw"
    };
    assert_eq!(top.format, thin_format);
    assert!(top.allocated() < MIB, "{} bytes", top.allocated());
    assert_eq!(top.read(0, BLOCK), block(0x11));

    // Writes after the snapshot go to the overlay only.
    top.write_pattern(0, BLOCK, 0x21);
    assert_eq!(top.read(0, BLOCK), block(0x21));
    assert_eq!(original.read(0, BLOCK), block(0x11));

    // A clone is a new, thin disk with the snapshot's contents.
    let clone = alice
        .call(
            "CloneDisk",
            json!({"snapshot_id": snapshot_id, "new_disk_name": "clone", "vdc_id": vdc}),
        )
        .await;
    let clone_id = id(&clone, "disk_id");
    assert_ne!(clone_id, disk);
    assert_eq!(clone["disk_name"], "clone");
    assert_eq!(clone["capacity"], DISK_1GB_SIZE);
    let clone_volume = db.of_disk(clone_id).await;
    assert!(clone_volume.allocated() < MIB);
    assert_eq!(clone_volume.read(0, BLOCK), block(0x11));
    assert_eq!(clone_volume.read(512 * MIB, BLOCK), block(0x12));
    let disks = alice.call("ListDisks", json!({"vdc_id": vdc})).await;
    assert_eq!(disks.as_array().unwrap().len(), 2);

    // Revert: the disk reads the snapshot again; what it wrote since is gone.
    let reverted = alice
        .call("RevertDisk", json!({"snapshot_id": snapshot_id}))
        .await;
    assert_eq!(reverted["disk_id"], disk);
    assert_eq!(reverted["capacity"], DISK_1GB_SIZE);
    let after = db.of_disk(disk).await;
    assert_eq!(after.read(0, BLOCK), block(0x11));
    assert_eq!(after.read(512 * MIB, BLOCK), block(0x12));
    assert!(!top.exists(), "the discarded overlay was not deleted");
    assert!(after.allocated() < MIB);

    // The snapshot itself never changes: write, revert again, and it is the same.
    after.write_pattern(0, BLOCK, 0x31);
    after.write_pattern(512 * MIB, BLOCK, 0x32);
    alice
        .call("RevertDisk", json!({"snapshot_id": snapshot_id}))
        .await;
    let again = db.of_disk(disk).await;
    assert_eq!(again.read(0, BLOCK), block(0x11));
    assert_eq!(again.read(512 * MIB, BLOCK), block(0x12));
    assert_eq!(clone_volume.read(0, BLOCK), block(0x11));

    // Snapshots on top of snapshots: revert to either.
    again.write_pattern(0, BLOCK, 0x41);
    let second = alice
        .call(
            "CreateDiskSnapshot",
            json!({"disk_id": disk, "name": "after"}),
        )
        .await;
    let second_id = id(&second, "snapshot_id");
    db.of_disk(disk).await.write_pattern(0, BLOCK, 0x51);
    alice
        .call("RevertDisk", json!({"snapshot_id": snapshot_id}))
        .await;
    assert_eq!(db.of_disk(disk).await.read(0, BLOCK), block(0x11));
    alice
        .call("RevertDisk", json!({"snapshot_id": second_id}))
        .await;
    assert_eq!(db.of_disk(disk).await.read(0, BLOCK), block(0x41));
    let listed = alice.call("ListSnapshots", json!({"disk_id": disk})).await;
    assert_eq!(listed.as_array().unwrap().len(), 2);

    // Another customer reaches none of it.
    for (op, args) in [
        ("ListSnapshots", json!({"disk_id": disk})),
        ("CreateDiskSnapshot", json!({"disk_id": disk, "name": "x"})),
        (
            "CloneDisk",
            json!({"snapshot_id": snapshot_id, "new_disk_name": "x", "vdc_id": app.bob.vdc_id}),
        ),
        ("RevertDisk", json!({"snapshot_id": snapshot_id})),
        ("DeleteSnapshot", json!({"snapshot_id": snapshot_id})),
    ] {
        let err = bob.fail(op, args).await;
        assert_eq!(err.code, "NOT_FOUND", "{op}: {err:?}");
    }
    let err = alice
        .fail(
            "CloneDisk",
            json!({"snapshot_id": snapshot_id, "new_disk_name": "x", "vdc_id": app.bob.vdc_id}),
        )
        .await;
    assert_eq!(err.code, "NOT_FOUND", "{err:?}");

    // Deleting a snapshot the disk stands on keeps the disk whole.
    alice
        .call("DeleteSnapshot", json!({"snapshot_id": second_id}))
        .await;
    assert_eq!(db.of_disk(disk).await.read(0, BLOCK), block(0x41));

    // Deleting the disk deletes its snapshots; the clone keeps what it stands on.
    alice.call("DeleteDisk", json!({"disk_id": disk})).await;
    let err = alice.fail("ListSnapshots", json!({"disk_id": disk})).await;
    assert_eq!(err.code, "NOT_FOUND", "{err:?}");
    let err = alice
        .fail("RevertDisk", json!({"snapshot_id": snapshot_id}))
        .await;
    assert_eq!(err.code, "NOT_FOUND", "{err:?}");
    assert_eq!(clone_volume.read(0, BLOCK), block(0x11));
    assert_eq!(clone_volume.read(512 * MIB, BLOCK), block(0x12));
    assert!(original.exists(), "the clone's base was deleted");
    alice.call("DeleteDisk", json!({"disk_id": clone_id})).await;
    assert!(!original.exists(), "the last volume outlived every disk");
    let left = db.stored();
    assert!(left.is_empty(), "volumes left behind: {left:?}");
}
storage_test!(snapshot_clone_and_revert, snapshot_clone_and_revert);

/// A running server's disk is neither snapshotted nor reverted, and a disk an image is being
/// made of cannot be deleted or reverted, nor its server started, until the image is done.
async fn running_servers_and_images_in_progress_hold_disks_still(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let server = create_server(&alice, vdc, "busy", BLANK_IMAGE, DISK_1GB).await;
    let server_id = id(&server, "server_id");
    let boot = boot_disk(&server).await;
    let snapshot = alice
        .call(
            "CreateDiskSnapshot",
            json!({"disk_id": boot, "name": "stopped"}),
        )
        .await;
    start(&alice, server_id).await;
    let err = alice
        .fail(
            "CreateDiskSnapshot",
            json!({"disk_id": boot, "name": "running"}),
        )
        .await;
    assert_eq!(err.code, "CONFLICT", "{err:?}");
    let err = alice
        .fail(
            "RevertDisk",
            json!({"snapshot_id": snapshot["snapshot_id"]}),
        )
        .await;
    assert_eq!(err.code, "CONFLICT", "{err:?}");
    let err = alice
        .fail(
            "CreateImage",
            json!({"disk_id": boot, "name": "x", "generate_password": false}),
        )
        .await;
    assert_eq!(err.code, "CONFLICT", "{err:?}");
    // Cloning reads only the snapshot, so a running server does not stop it.
    alice
        .call(
            "CloneDisk",
            json!({"snapshot_id": snapshot["snapshot_id"], "new_disk_name": "c", "vdc_id": vdc}),
        )
        .await;
    stop(&alice, server_id).await;

    // While a CreateImage job of the disk is unfinished (here: running on another node), the
    // disk is pinned: its server does not start or go, the disk is not deleted or reverted.
    let db = ServerDb::open(&app.server).await;
    let job = db
        .image_job_running_elsewhere(app.alice.customer_id, boot)
        .await;
    let snapshot_id = snapshot["snapshot_id"].clone();
    for (op, args) in [
        ("StartServer", json!({"server_id": server_id})),
        ("DestroyServer", json!({"server_id": server_id})),
        ("RevertDisk", json!({"snapshot_id": snapshot_id})),
    ] {
        let err = alice.fail(op, args).await;
        assert_eq!(err.code, "CONFLICT", "{op}: {err:?}");
        assert!(err.message.contains(&format!("job {job}")), "{op}: {err:?}");
    }
    alice
        .call(
            "DetachDisk",
            json!({"server_id": server_id, "disk_id": boot}),
        )
        .await;
    let err = alice.fail("DeleteDisk", json!({"disk_id": boot})).await;
    assert_eq!(err.code, "CONFLICT", "{err:?}");
    // Moved to another server, it still keeps that server from starting.
    let other = create_server(&alice, vdc, "other", BLANK_IMAGE, DISK_1GB).await;
    let other_id = id(&other, "server_id");
    alice
        .call(
            "AttachDisk",
            json!({"server_id": other_id, "disk_id": boot}),
        )
        .await;
    let err = alice
        .fail("StartServer", json!({"server_id": other_id}))
        .await;
    assert_eq!(err.code, "CONFLICT", "{err:?}");
    // Snapshots and clones leave the data being copied alone, so they go ahead.
    alice
        .call(
            "CreateDiskSnapshot",
            json!({"disk_id": boot, "name": "meanwhile"}),
        )
        .await;

    // Once the job has ended, the disk is free.
    db.job_failed(job).await;
    start(&alice, other_id).await;
    stop(&alice, other_id).await;
    alice
        .call("RevertDisk", json!({"snapshot_id": snapshot_id}))
        .await;
    alice
        .call(
            "DetachDisk",
            json!({"server_id": other_id, "disk_id": boot}),
        )
        .await;
    alice.call("DeleteDisk", json!({"disk_id": boot})).await;
    start(&alice, server_id).await;
}
db_test!(
    running_servers_and_images_in_progress_hold_disks_still,
    running_servers_and_images_in_progress_hold_disks_still
);
