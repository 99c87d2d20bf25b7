//! Backups (issue 22): `extility backup` copies a serving node's SQLite database and volumes
//! while fetches and deletions run, `extility restore` puts them into a fresh data directory,
//! every disk there reads back byte for byte, a server boots from a restored disk, and
//! `extility verify` says whether the database and the volumes agree.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;

use crate::qemu_servers::{
    attach, create_server, disk_image, fetch_disk, start, start_app, wait_console,
};
use crate::support::fetch_disk::sparse_image;
use crate::support::image_server::ImageServer;
use crate::support::{Api, Backend, ServerOptions, TestDatabase, TestServer, binary};

fn extility(args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap()
}

/// The volume files the database at `db` names, by disk name.
async fn disk_volumes(db: &std::path::Path) -> Vec<(String, String)> {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .unwrap();
    sqlx::query_as(
        "SELECT d.name, v.file FROM disks d JOIN volumes v ON v.id = d.volume_id ORDER BY d.id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

/// Whether two volume files read the same to a guest (qcow2 overlays through their backing).
fn same_bytes(a: &std::path::Path, b: &std::path::Path) -> bool {
    Command::new("qemu-img")
        .args(["compare", "-U"])
        .arg(a)
        .arg(b)
        .output()
        .unwrap()
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_byte_and_boots() {
    let app = start_app(Backend::Sqlite).await;
    let files = ImageServer::start().await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let boot_url = files.put_data("boot.img", disk_image(&app, "RESTORED-DISK-BOOTS", false));
    let boot = fetch_disk(&alice, &boot_url, "boot", vdc).await;
    let (data, _) = sparse_image(32 << 20, 61, 7);
    let data_url = files.put_data("data.img", data);
    let data_disk = fetch_disk(&alice, &data_url, "data", vdc).await;
    // A snapshot leaves the disk a qcow2 overlay over the snapshot's volume.
    alice
        .call(
            "CreateDiskSnapshot",
            json!({"disk_id": data_disk["disk_id"], "name": "before"}),
        )
        .await;

    // Load while the backup runs: disks fetched and deleted, over and over.
    let stop = Arc::new(AtomicBool::new(false));
    let load = churn_disks(&alice, &data_url, vdc, &stop);
    let dest = app.dir.path().join("backup");
    let out = extility(&[
        "backup",
        dest.to_str().unwrap(),
        "--data-dir",
        app.server.data_dir.to_str().unwrap(),
        "--database-url",
        &app.server.db_url,
    ]);
    stop.store(true, Ordering::Relaxed);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(load.await.unwrap() >= 1);

    // Not over a live data directory.
    let out = extility(&[
        "restore",
        dest.to_str().unwrap(),
        "--data-dir",
        app.server.data_dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is live"),
        "{out:?}"
    );

    let restored = app.dir.path().join("restored");
    let out = extility(&[
        "restore",
        dest.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every disk of the copy reads as the original does (nothing ran on these disks).
    let volumes = disk_volumes(&restored.join("extility.db")).await;
    let names: Vec<&str> = volumes.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"boot") && names.contains(&"data"),
        "{names:?}"
    );
    for (name, file) in &volumes {
        let original = app.server.data_dir.join("volumes").join(file);
        let copy = restored.join("volumes").join(file);
        if name.starts_with("load-") && !original.exists() {
            continue; // deleted since; its copy is the point of holding it
        }
        assert!(same_bytes(&original, &copy), "disk {name} ({file}) differs");
    }
    let verify = |dir: &std::path::Path| extility(&["verify", "--data-dir", dir.to_str().unwrap()]);
    let out = verify(&restored);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A server boots from the restored disk on a node serving the restored directory.
    let db = TestDatabase::new(Backend::Sqlite, &restored).await;
    let node = TestServer::spawn(
        &db,
        &restored,
        ServerOptions {
            args: ["--hypervisor", "qemu"].map(String::from).to_vec(),
            ..Default::default()
        },
    );
    let alice = node.api(&app.alice.email, &app.alice.password);
    let server_id = create_server(&alice, vdc, -1, "from-backup").await;
    attach(&alice, server_id, &boot, Some(0)).await;
    start(&alice, server_id).await;
    wait_console(&alice, server_id, "RESTORED-DISK-BOOTS").await;
    drop(node);

    // verify reports a missing volume and never deletes anything.
    let (_, file) = volumes.iter().find(|(n, _)| n == "data").unwrap();
    std::fs::remove_file(restored.join("volumes").join(file)).unwrap();
    let before = std::fs::read_dir(restored.join("volumes")).unwrap().count();
    let out = verify(&restored);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!("its file {file} is missing")),
        "{report}"
    );
    assert_eq!(
        std::fs::read_dir(restored.join("volumes")).unwrap().count(),
        before
    );
}

/// Load while a backup runs: disks fetched from `url` into alice's VDC `vdc` and deleted, over
/// and over, until `stop` (at least once); the task answers how many rounds it made.
pub(crate) fn churn_disks(
    alice: &Api,
    url: &str,
    vdc: i64,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u32> {
    let (alice, stop, url) = (alice.clone(), stop.clone(), url.to_string());
    tokio::spawn(async move {
        let mut rounds = 0;
        while !stop.load(Ordering::Relaxed) || rounds == 0 {
            let disk = fetch_disk(&alice, &url, &format!("load-{rounds}"), vdc).await;
            alice
                .call("DeleteDisk", json!({"disk_id": disk["disk_id"]}))
                .await;
            rounds += 1;
        }
        rounds
    })
}

/// `extility backup DEST --prune-keep N --prune-older-than AGE` removes the other backups in
/// DEST's folder that the rule does not keep, and nothing that is not a backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_backups_are_pruned() {
    let app = crate::support::TestApp::start(Backend::Sqlite).await;
    let backups = app.dir.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    std::fs::create_dir(backups.join("photos")).unwrap();
    let backup = |name: &str, prune: &[&str]| {
        let dest = backups.join(name);
        let mut args = vec![
            "backup",
            dest.to_str().unwrap(),
            "--data-dir",
            app.server.data_dir.to_str().unwrap(),
            "--database-url",
            &app.server.db_url,
        ];
        args.extend(prune);
        extility(&args)
    };
    let names = || {
        let mut names: Vec<String> = std::fs::read_dir(&backups)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    for name in ["monday", "tuesday", "wednesday"] {
        let out = backup(name, &["--prune-keep", "2"]);
        assert!(out.status.success(), "{out:?}");
    }
    assert_eq!(names(), ["photos", "tuesday", "wednesday"]);

    // Tuesday's backup made ten days ago: older than a week.
    let ten_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(10 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(backups.join("tuesday").join("BACKUP"))
        .unwrap()
        .set_modified(ten_days_ago)
        .unwrap();
    let out = backup("thursday", &["--prune-older-than", "7d"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("pruned the backup"), "{said}");
    assert_eq!(names(), ["photos", "thursday", "wednesday"]);

    // A rule that is not one is refused before anything is copied.
    let out = backup("friday", &["--prune-older-than", "a week"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--prune-older-than"),
        "{out:?}"
    );
    let out = backup("friday", &["--prune-keep", "0"]);
    assert!(!out.status.success());
    assert_eq!(names(), ["photos", "thursday", "wednesday"]);

    // A pruned set still restores.
    let restored = app.dir.path().join("restored");
    let out = extility(&[
        "restore",
        backups.join("thursday").to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
}

/// On PostgreSQL with file volumes, `extility backup` holds the volumes, dumps the database
/// (`pg_dump`) and copies the volumes the dump names, while disks are fetched and deleted;
/// `extility restore --database-url` puts the dump into a new, empty database (refusing one
/// that is not) and the volumes into a new data directory; the two agree (`verify`), and a
/// node on them serves the disks as they were at the backup, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_backup_under_load_restores_into_a_new_database() {
    use crate::support::server_db::ServerDb;
    let app = crate::support::TestApp::start_with(
        Backend::Postgres,
        crate::support::fetch_disk::allowing("127.0.0.0/8"),
    )
    .await;
    let files = ImageServer::start().await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let (kept_image, _) = sparse_image(8 << 20, 5, 21);
    let (gone_image, _) = sparse_image(8 << 20, 3, 22);
    let kept = fetch_disk(
        &alice,
        &files.put_data("kept.img", kept_image.clone()),
        "kept",
        vdc,
    )
    .await;
    let gone = fetch_disk(
        &alice,
        &files.put_data("gone.img", gone_image.clone()),
        "gone",
        vdc,
    )
    .await;
    let (load_image, _) = sparse_image(4 << 20, 9, 23);
    let load_url = files.put_data("load.img", load_image);

    let stop = Arc::new(AtomicBool::new(false));
    let load = churn_disks(&alice, &load_url, vdc, &stop);
    let dest = app.dir.path().join("backup");
    let out = extility(&[
        "backup",
        dest.to_str().unwrap(),
        "--data-dir",
        app.server.data_dir.to_str().unwrap(),
        "--database-url",
        &app.server.db_url,
    ]);
    stop.store(true, Ordering::Relaxed);
    assert!(out.status.success(), "{out:?}");
    assert!(load.await.unwrap() >= 1);
    assert!(dest.join("extility.pgdump").exists() && !dest.join("extility.db").exists());
    // Changed after the backup: the restore brings it back.
    alice
        .call("DeleteDisk", json!({"disk_id": gone["disk_id"]}))
        .await;

    let restored = app.dir.path().join("restored");
    let restore = |url: &str| {
        extility(&[
            "restore",
            dest.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
            "--database-url",
            url,
        ])
    };
    // Never over a database in use, and nothing is restored then.
    let out = restore(&app.server.db_url);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("restore into a new, empty database"),
        "{out:?}"
    );
    assert!(!restored.join("volumes").exists());
    let target = TestDatabase::new(Backend::Postgres, &restored).await;
    let out = restore(&target.url);
    assert!(out.status.success(), "{out:?}");

    // The database and the volumes agree: at most volumes the load made after the dump have
    // no row (the orphan sweep's), never a row without its volume.
    let out = extility(&[
        "verify",
        "--data-dir",
        restored.to_str().unwrap(),
        "--database-url",
        &target.url,
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    for line in report.lines().filter(|l| !l.contains("agree")) {
        assert!(line.starts_with("stored volume "), "{report}");
    }

    // A node on the restored database and directory serves both disks as they were.
    let node = TestServer::spawn(&target, &restored, ServerOptions::default());
    let restored_alice = node.api(&app.alice.email, &app.alice.password);
    let disks = restored_alice
        .call("ListDisks", json!({"vdc_id": vdc}))
        .await;
    let db = ServerDb::open(&node).await;
    for (disk, image) in [(&kept, &kept_image), (&gone, &gone_image)] {
        let id = disk["disk_id"].as_i64().unwrap();
        assert!(
            disks.as_array().unwrap().iter().any(|d| d["disk_id"] == id),
            "{disks}"
        );
        let volume = db.of_disk(id).await;
        assert!(
            volume.read(0, image.len() as u64) == *image,
            "disk {} differs",
            disk["disk_name"]
        );
    }
    drop(node);
}
