//! The operations a control panel needs (issue 13): RenameServer, RenameDisk,
//! ChangeServerProductOffer, ResizeDisk and DeleteVDC. Each one's success, its refusals (a
//! running server, a smaller offer, a VDC that still holds something, quotas, bad names), and
//! another customer's ids answering exactly like missing ones with nothing changed. ResizeDisk
//! is checked on the volume files themselves, raw and qcow2 (no guest boots: the guest sees
//! the new size at its next boot, which is QEMU reading the file). On SQLite and PostgreSQL.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::catalogue::{
    BLANK_IMAGE, DISK_1GB, DISK_1GB_SIZE, DISK_10GB, DISK_10GB_SIZE, DISK_20GB, DISK_20GB_SIZE,
    SERVER_1CPU_512MB, SERVER_2CPU_2GB,
};
use crate::support::fetch_disk::{fetch, fetch_args};
use crate::support::image_server::{ImageServer, Served};
use crate::support::server_db::ServerDb;
use crate::support::{Api, ApiError, Backend, MIB, ServerOptions, TestApp, db_test, id};

/// Server offer "4 CPU / 8 GB RAM".
const SERVER_4CPU_8GB: i64 = 20;
const MISSING: i64 = 8_000_000;

fn options() -> ServerOptions {
    ServerOptions {
        args: vec!["--hypervisor".into(), "none".into()],
        ..Default::default()
    }
}

#[track_caller]
fn assert_invalid(err: &ApiError, argument: &str) {
    assert_eq!(err.code, "INVALID_ARGUMENT", "{err:?}");
    assert!(
        err.message.contains(argument),
        "{err:?} should name {argument}"
    );
}

/// `caller` calling `op` with `args` where `"$ID"` is `theirs` (another customer's id) fails
/// exactly as with an id that does not exist: NOT_FOUND, same status, same message.
async fn looks_missing(caller: &Api, op: &str, args: Value, theirs: i64) {
    let call = |target: i64| {
        let text = args.to_string().replace("\"$ID\"", &target.to_string());
        serde_json::from_str::<Value>(&text).unwrap()
    };
    let refused = caller.fail(op, call(theirs)).await;
    let missing = caller.fail(op, call(MISSING)).await;
    assert_eq!(refused.code, "NOT_FOUND", "{op}: {refused:?}");
    assert_eq!(refused.status, missing.status, "{op}");
    assert_eq!(
        refused.message.replace(&theirs.to_string(), "N"),
        missing.message.replace(&MISSING.to_string(), "N"),
        "{op}: another customer's id must look like a missing one"
    );
}

async fn create_server(
    api: &Api,
    vdc: i64,
    vlan: i64,
    name: &str,
    offer: i64,
    disks: Value,
) -> Value {
    api.call(
        "CreateServer",
        json!({"vdc_id": vdc, "vlan_id": vlan, "server_name": name, "image_id": BLANK_IMAGE,
               "server_productoffer_id": offer, "disk_productoffer_ids": disks}),
    )
    .await
}

async fn create_disk(api: &Api, vdc: i64, name: &str, offer: i64) -> Value {
    api.call(
        "CreateDisk",
        json!({"vdc_id": vdc, "name": name, "disk_productoffer_id": offer, "image_id": 0}),
    )
    .await
}

fn set_quota(app: &TestApp, email: &str, args: &[&str]) {
    let mut all = vec!["customer", "set-quota", "--email", email];
    all.extend(args);
    let out = app.server.cli(&all);
    assert!(
        out.status.success(),
        "set-quota {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn power(api: &Api, op: &str, server: i64) {
    let args = if op == "StopServer" {
        json!({"server_id": server, "stop_method": 2})
    } else {
        json!({"server_id": server})
    };
    api.job_ok(id(&api.call(op, args).await, "job_id")).await;
}

async fn renames(backend: Backend) {
    let app = TestApp::start_with(backend, options()).await;
    let (alice, bob) = (app.alice(), app.bob());
    let vdc = app.alice.vdc_id;
    let server = create_server(&alice, vdc, -1, "web", SERVER_1CPU_512MB, json!([DISK_1GB])).await;
    let server_id = id(&server, "server_id");
    let disk = create_disk(&alice, vdc, "data", DISK_1GB).await;
    let disk_id = id(&disk, "disk_id");

    let renamed = alice
        .call(
            "RenameServer",
            json!({"server_id": server_id, "server_name": "  frontend  "}),
        )
        .await;
    assert_eq!(renamed["server_name"], "frontend");
    assert_eq!(renamed["disks"], server["disks"], "the rest is as it was");
    let got = alice
        .call("GetServer", json!({"server_id": server_id}))
        .await;
    assert_eq!(got, renamed);
    let listed = alice
        .call("ListServers", json!({"vdc_id": vdc, "name": "FRONT"}))
        .await;
    assert_eq!(listed, json!([renamed]));

    let renamed = alice
        .call(
            "RenameDisk",
            json!({"disk_id": disk_id, "name": "Backups é"}),
        )
        .await;
    assert_eq!(renamed["disk_name"], "Backups é");
    assert_eq!(renamed["capacity"], disk["capacity"]);
    assert_eq!(
        alice.call("GetDisk", json!({"disk_id": disk_id})).await,
        renamed
    );

    // Bad names change nothing.
    for bad in [
        json!(""),
        json!("   "),
        json!("x".repeat(101)),
        json!("a\u{7}b"),
        json!(null),
    ] {
        let err = alice
            .fail(
                "RenameServer",
                json!({"server_id": server_id, "server_name": bad}),
            )
            .await;
        assert!(
            ["INVALID_ARGUMENT", "MISSING_ARGUMENT"].contains(&err.code.as_str()),
            "{err:?}"
        );
        assert!(err.message.contains("server_name"), "{err:?}");
        let err = alice
            .fail("RenameDisk", json!({"disk_id": disk_id, "name": bad}))
            .await;
        assert!(
            ["INVALID_ARGUMENT", "MISSING_ARGUMENT"].contains(&err.code.as_str()),
            "{err:?}"
        );
    }
    // Another customer's ids are missing ones.
    looks_missing(
        &bob,
        "RenameServer",
        json!({"server_id": "$ID", "server_name": "mine"}),
        server_id,
    )
    .await;
    looks_missing(
        &bob,
        "RenameDisk",
        json!({"disk_id": "$ID", "name": "mine"}),
        disk_id,
    )
    .await;
    assert_eq!(
        alice
            .call("GetServer", json!({"server_id": server_id}))
            .await["server_name"],
        "frontend"
    );
    assert_eq!(
        alice.call("GetDisk", json!({"disk_id": disk_id})).await["disk_name"],
        "Backups é"
    );
    // Each rename left its audit row, naming what it renamed (and, as for every call whose
    // result is a server, the server's disks).
    let boot = id(&server["disks"][0], "disk_id");
    let events = alice
        .call("ListAuditEvents", json!({"page_size": 20}))
        .await;
    let renames: Vec<(&str, &str)> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "OK")
        .map(|e| (e["operation"].as_str().unwrap(), e["ids"].as_str().unwrap()))
        .filter(|(op, _)| op.starts_with("Rename"))
        .collect();
    assert_eq!(
        renames,
        [
            ("RenameDisk", format!("disk_id={disk_id}").as_str()),
            (
                "RenameServer",
                format!("server_id={server_id} disk_id={boot}").as_str()
            )
        ]
    );
}
db_test!(renames, renames);

async fn change_server_product_offer(backend: Backend) {
    let app = TestApp::start_with(backend, options()).await;
    let (alice, bob) = (app.alice(), app.bob());
    let server = create_server(
        &alice,
        app.alice.vdc_id,
        -1,
        "web",
        SERVER_1CPU_512MB,
        json!([DISK_1GB]),
    )
    .await;
    let server_id = id(&server, "server_id");
    let change = |offer: i64| json!({"server_id": server_id, "server_productoffer_id": offer});

    let changed = alice
        .call("ChangeServerProductOffer", change(SERVER_2CPU_2GB))
        .await;
    assert_eq!(changed["product_offer_id"], SERVER_2CPU_2GB);
    assert_eq!(changed["processors"], 2);
    assert_eq!(changed["memory"], 2048);
    assert_eq!(changed["disks"], server["disks"]);
    assert_eq!(
        alice
            .call("GetServer", json!({"server_id": server_id}))
            .await,
        changed
    );
    // It starts with the new offer: the running quotas count it.
    power(&alice, "StartServer", server_id).await;
    let quota = alice.call("GetQuota", json!({})).await;
    assert_eq!(quota["running_vcpus_used"], 2);
    assert_eq!(quota["running_memory_mb_used"], 2048);

    // Running: CONFLICT, nothing changed.
    let err = alice
        .fail("ChangeServerProductOffer", change(SERVER_1CPU_512MB))
        .await;
    assert_eq!(err.code, "CONFLICT", "{err:?}");
    assert!(err.message.contains("running"), "{err:?}");
    assert_eq!(
        alice
            .call("GetServer", json!({"server_id": server_id}))
            .await["processors"],
        2
    );
    power(&alice, "StopServer", server_id).await;

    // Not a server offer, or no offer.
    assert_invalid(
        &alice
            .fail("ChangeServerProductOffer", change(DISK_1GB))
            .await,
        "server_productoffer_id",
    );
    assert_eq!(
        alice
            .fail("ChangeServerProductOffer", change(MISSING))
            .await
            .code,
        "NOT_FOUND"
    );

    // An offer bigger than a running quota allows one server: it could never start.
    set_quota(
        &app,
        &app.alice.email,
        &["--running-vcpus", "2", "--running-memory", "4096"],
    );
    let err = alice
        .fail("ChangeServerProductOffer", change(SERVER_4CPU_8GB))
        .await;
    assert_eq!(err.code, "QUOTA_EXCEEDED", "{err:?}");
    assert!(
        err.message.starts_with("quota running_vcpus exceeded"),
        "{err:?}"
    );
    set_quota(&app, &app.alice.email, &["--running-vcpus", "8"]);
    let err = alice
        .fail("ChangeServerProductOffer", change(SERVER_4CPU_8GB))
        .await;
    assert!(
        err.message.starts_with("quota running_memory_mb exceeded"),
        "{err:?}"
    );
    let now = alice
        .call("GetServer", json!({"server_id": server_id}))
        .await;
    assert_eq!(
        (&now["product_offer_id"], &now["processors"], &now["memory"]),
        (&json!(SERVER_2CPU_2GB), &json!(2), &json!(2048)),
        "unchanged"
    );
    let back = alice
        .call("ChangeServerProductOffer", change(SERVER_1CPU_512MB))
        .await;
    assert_eq!(
        (back["processors"].clone(), back["memory"].clone()),
        (json!(1), json!(512))
    );

    looks_missing(
        &bob,
        "ChangeServerProductOffer",
        json!({"server_id": "$ID", "server_productoffer_id": SERVER_2CPU_2GB}),
        server_id,
    )
    .await;
    assert_eq!(
        alice
            .call("GetServer", json!({"server_id": server_id}))
            .await,
        back
    );
}
db_test!(change_server_product_offer, change_server_product_offer);

async fn resize_disk(backend: Backend) {
    let app = TestApp::start_with(backend, options()).await;
    let (alice, bob) = (app.alice(), app.bob());
    let vdc = app.alice.vdc_id;
    let db = ServerDb::open(&app.server).await;
    let disk = create_disk(&alice, vdc, "data", DISK_1GB).await;
    let disk_id = id(&disk, "disk_id");
    let resize = |offer: i64| json!({"disk_id": disk_id, "disk_productoffer_id": offer});
    let used = |api: &Api| {
        let api = api.clone();
        async move {
            api.call("GetQuota", json!({})).await["storage_bytes_used"]
                .as_u64()
                .unwrap()
        }
    };

    // A raw volume: what the guest wrote stays, the rest reads zeros and takes no space.
    let raw = db.of_disk(disk_id).await;
    assert_eq!(raw.format, "raw");
    raw.write(0, b"first");
    raw.write(DISK_1GB_SIZE - 5, b"last!");
    let before = used(&alice).await;
    let grown = alice.call("ResizeDisk", resize(DISK_10GB)).await;
    assert_eq!(grown["capacity"], DISK_10GB_SIZE);
    assert_eq!(grown["disk_name"], "data");
    assert_eq!(
        alice.call("GetDisk", json!({"disk_id": disk_id})).await,
        grown
    );
    let volume = db.of_disk(disk_id).await;
    assert_eq!(volume, raw, "grown in place");
    assert_eq!(volume.virtual_size(), DISK_10GB_SIZE);
    assert_eq!(volume.read(0, 5), b"first");
    assert_eq!(volume.read(DISK_1GB_SIZE - 5, 5), b"last!");
    assert_eq!(volume.read(DISK_10GB_SIZE - 4096, 4096), vec![0u8; 4096]);
    assert!(
        volume.allocated() < MIB,
        "thin: {} bytes",
        volume.allocated()
    );
    assert_eq!(used(&alice).await, before + DISK_10GB_SIZE - DISK_1GB_SIZE);
    // The same size again changes nothing.
    assert_eq!(alice.call("ResizeDisk", resize(DISK_10GB)).await, grown);

    // Never smaller; only disk offers; offers that exist.
    let err = alice.fail("ResizeDisk", resize(DISK_1GB)).await;
    assert_invalid(&err, "disk_productoffer_id");
    assert!(err.message.contains("never shrink"), "{err:?}");
    assert_invalid(
        &alice.fail("ResizeDisk", resize(SERVER_1CPU_512MB)).await,
        "disk_productoffer_id",
    );
    assert_eq!(
        alice.fail("ResizeDisk", resize(MISSING)).await.code,
        "NOT_FOUND"
    );
    assert_eq!(db.of_disk(disk_id).await.virtual_size(), DISK_10GB_SIZE);
    assert_eq!(
        alice.call("GetDisk", json!({"disk_id": disk_id})).await,
        grown
    );

    // A qcow2 overlay (the disk after a snapshot) grows past its backing file; the snapshot
    // keeps its size.
    let snapshot = alice
        .call(
            "CreateDiskSnapshot",
            json!({"disk_id": disk_id, "name": "before"}),
        )
        .await;
    let overlay = db.of_disk(disk_id).await;
    assert_eq!(overlay.format, "qcow2");
    let grown = alice.call("ResizeDisk", resize(DISK_20GB)).await;
    assert_eq!(grown["capacity"], DISK_20GB_SIZE);
    let overlay = db.of_disk(disk_id).await;
    assert_eq!(overlay.virtual_size(), DISK_20GB_SIZE);
    assert_eq!(overlay.read(0, 5), b"first");
    assert_eq!(overlay.read(DISK_1GB_SIZE - 5, 5), b"last!");
    assert_eq!(overlay.read(DISK_20GB_SIZE - 512, 512), vec![0u8; 512]);
    let frozen = db.of_snapshot(id(&snapshot, "snapshot_id")).await;
    assert_eq!(frozen.virtual_size(), DISK_10GB_SIZE);
    let clone = alice
        .call(
            "CloneDisk",
            json!({"snapshot_id": snapshot["snapshot_id"], "new_disk_name": "old", "vdc_id": vdc}),
        )
        .await;
    assert_eq!(clone["capacity"], DISK_10GB_SIZE);
    let reverted = alice
        .call(
            "RevertDisk",
            json!({"snapshot_id": snapshot["snapshot_id"]}),
        )
        .await;
    assert_eq!(
        reverted["capacity"], DISK_20GB_SIZE,
        "a revert keeps the disk's size"
    );
    assert_eq!(db.of_disk(disk_id).await.virtual_size(), DISK_20GB_SIZE);

    // A disk of a running server: CONFLICT; stopped, it grows.
    let server = create_server(&alice, vdc, -1, "web", SERVER_1CPU_512MB, json!([DISK_1GB])).await;
    let server_id = id(&server, "server_id");
    let boot = id(&server["disks"][0], "disk_id");
    power(&alice, "StartServer", server_id).await;
    let boot_resize = json!({"disk_id": boot, "disk_productoffer_id": DISK_10GB});
    let err = alice.fail("ResizeDisk", boot_resize.clone()).await;
    assert_eq!(err.code, "CONFLICT", "{err:?}");
    assert!(err.message.contains("running"), "{err:?}");
    assert_eq!(db.of_disk(boot).await.virtual_size(), DISK_1GB_SIZE);
    power(&alice, "StopServer", server_id).await;
    assert_eq!(
        alice.call("ResizeDisk", boot_resize).await["capacity"],
        DISK_10GB_SIZE
    );
    assert_eq!(
        alice
            .call("GetServer", json!({"server_id": server_id}))
            .await["disks"][0]["capacity"],
        DISK_10GB_SIZE
    );
    assert_eq!(db.of_disk(boot).await.virtual_size(), DISK_10GB_SIZE);

    // While an image is being made of it: CONFLICT.
    let small = id(
        &create_disk(&alice, vdc, "small", DISK_1GB).await,
        "disk_id",
    );
    let small_resize = json!({"disk_id": small, "disk_productoffer_id": DISK_20GB});
    let imaging = db
        .image_job_running_elsewhere(app.alice.customer_id, small)
        .await;
    let err = alice.fail("ResizeDisk", small_resize.clone()).await;
    assert_eq!(err.code, "CONFLICT", "{err:?}");
    db.job_failed(imaging).await;

    // Over the storage quota: QUOTA_EXCEEDED, nothing grown.
    let now = used(&alice).await;
    set_quota(
        &app,
        &app.alice.email,
        &["--storage-bytes", &(now + 5 * (1 << 30)).to_string()],
    );
    let err = alice.fail("ResizeDisk", small_resize.clone()).await;
    assert_eq!(err.code, "QUOTA_EXCEEDED", "{err:?}");
    assert!(
        err.message.starts_with("quota storage_bytes exceeded"),
        "{err:?}"
    );
    assert_eq!(db.of_disk(small).await.virtual_size(), DISK_1GB_SIZE);
    assert_eq!(
        alice.call("GetDisk", json!({"disk_id": small})).await["capacity"],
        DISK_1GB_SIZE
    );
    assert_eq!(used(&alice).await, now);
    let small_to_10g = json!({"disk_id": small, "disk_productoffer_id": DISK_10GB});
    assert_eq!(
        alice.fail("ResizeDisk", small_to_10g).await.code,
        "QUOTA_EXCEEDED"
    );

    // Another customer's disk is a missing one, and stays as it is.
    looks_missing(
        &bob,
        "ResizeDisk",
        json!({"disk_id": "$ID", "disk_productoffer_id": DISK_20GB}),
        small,
    )
    .await;
    assert_eq!(db.of_disk(small).await.virtual_size(), DISK_1GB_SIZE);
}
db_test!(resize_disk, resize_disk);

/// A source that dribbles: 16 MiB at 64 KiB per 100 ms takes about 25 s.
fn dribbling() -> Served {
    Served {
        data: vec![0x42u8; (16 * MIB) as usize].into(),
        pace: Some((64 << 10, Duration::from_millis(100))),
        ..Default::default()
    }
}

async fn delete_vdc(backend: Backend) {
    let mut options = options();
    options
        .args
        .extend(["--allow-fetch-from".into(), "127.0.0.0/8".into()]);
    let app = TestApp::start_with(backend, options).await;
    let (alice, bob) = (app.alice(), app.bob());
    let vdc_ids = |api: &Api| {
        let api = api.clone();
        async move {
            api.call("ListVDCs", json!({}))
                .await
                .as_array()
                .unwrap()
                .iter()
                .map(|v| id(v, "vdc_id"))
                .collect::<Vec<i64>>()
        }
    };

    // An empty VDC goes.
    let spare = id(
        &alice.call("CreateVDC", json!({"vdc_name": "spare"})).await,
        "vdc_id",
    );
    assert_eq!(
        alice.call("DeleteVDC", json!({"vdc_id": spare})).await,
        json!({"result": 1})
    );
    assert_eq!(vdc_ids(&alice).await, [app.alice.vdc_id]);
    assert_eq!(
        alice.fail("DeleteVDC", json!({"vdc_id": spare})).await.code,
        "NOT_FOUND"
    );
    let err = alice
        .fail(
            "CreateDisk",
            json!({"vdc_id": spare, "name": "x", "disk_productoffer_id": DISK_1GB, "image_id": 0}),
        )
        .await;
    assert_eq!(err.code, "NOT_FOUND");

    // One that holds things: CONFLICT naming them, nothing deleted.
    let busy = id(
        &alice.call("CreateVDC", json!({"vdc_name": "busy"})).await,
        "vdc_id",
    );
    let vlan = id(
        &alice
            .call("CreateVLAN", json!({"vdc_id": busy, "vlan_name": "net"}))
            .await,
        "vlan_id",
    );
    let server = create_server(
        &alice,
        busy,
        vlan,
        "web",
        SERVER_1CPU_512MB,
        json!([DISK_1GB, DISK_1GB]),
    )
    .await;
    let loose = id(
        &create_disk(&alice, busy, "loose", DISK_1GB).await,
        "disk_id",
    );
    let err = alice.fail("DeleteVDC", json!({"vdc_id": busy})).await;
    assert_eq!(err.code, "CONFLICT", "{err:?}");
    assert_eq!(err.status, 409);
    assert_eq!(
        err.message,
        format!("VDC {busy} still holds 1 server, 3 disks, 1 VLAN; delete them first")
    );
    // Another customer: a missing VDC, empty or not.
    looks_missing(&bob, "DeleteVDC", json!({"vdc_id": "$ID"}), busy).await;
    let empty = id(
        &alice.call("CreateVDC", json!({"vdc_name": "empty"})).await,
        "vdc_id",
    );
    looks_missing(&bob, "DeleteVDC", json!({"vdc_id": "$ID"}), empty).await;
    assert_eq!(vdc_ids(&alice).await, [app.alice.vdc_id, busy, empty]);
    let vdc = alice
        .call(
            "ListVDCs",
            json!({"after_id": app.alice.vdc_id, "page_size": 1}),
        )
        .await;
    assert_eq!(
        (
            vdc[0]["number_of_servers"].clone(),
            vdc[0]["number_of_disks"].clone(),
            vdc[0]["number_of_vlans"].clone()
        ),
        (json!(1), json!(3), json!(1))
    );

    // Emptied step by step.
    let job = alice
        .call("DestroyServer", json!({"server_id": server["server_id"]}))
        .await;
    alice.job_ok(id(&job, "job_id")).await;
    let err = alice.fail("DeleteVDC", json!({"vdc_id": busy})).await;
    assert_eq!(
        err.message,
        format!("VDC {busy} still holds 1 disk, 1 VLAN; delete them first")
    );
    alice.call("DeleteDisk", json!({"disk_id": loose})).await;
    let err = alice.fail("DeleteVDC", json!({"vdc_id": busy})).await;
    assert_eq!(
        err.message,
        format!("VDC {busy} still holds 1 VLAN; delete them first")
    );
    alice.call("DeleteVLAN", json!({"vlan_id": vlan})).await;
    assert_eq!(
        alice.call("DeleteVDC", json!({"vdc_id": busy})).await,
        json!({"result": 1})
    );

    // A fetch still to make a disk in it counts; one making an image does not.
    let images = ImageServer::start().await;
    images.put("slow.img", dribbling());
    let fetching = fetch(&alice, fetch_args(&images.url("slow.img"), empty, "slow")).await;
    let mut image_args = fetch_args(&images.url("slow.img"), empty, "slow image");
    image_args["make_image"] = json!(true);
    let making_image = fetch(&alice, image_args).await;
    alice.job_until(fetching, |job| job["status"] == 2).await;
    let err = alice.fail("DeleteVDC", json!({"vdc_id": empty})).await;
    assert_eq!(
        err.message,
        format!("VDC {empty} still holds 1 unfinished FetchDisk job; delete them first")
    );
    alice.call("CancelJob", json!({"job_id": fetching})).await;
    assert_eq!(alice.wait_job(fetching).await["status"], 4);
    assert_eq!(
        alice.call("DeleteVDC", json!({"vdc_id": empty})).await,
        json!({"result": 1})
    );
    let _ = alice
        .try_call("CancelJob", json!({"job_id": making_image}))
        .await;
    assert_eq!(vdc_ids(&alice).await, [app.alice.vdc_id]);
}
db_test!(delete_vdc, delete_vdc);
