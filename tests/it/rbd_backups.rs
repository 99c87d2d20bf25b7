//! Backups of RBD storage (issue 22): `extility backup --storage rbd` snapshots every volume
//! image of the pool while the node serves and fetches and deletes, new data written
//! afterwards is undone by `extility restore --storage rbd` (every disk reads back as at the
//! backup, by checksum), and `extility verify --storage rbd` finds an image without a row and
//! a row without an image, and deletes neither; a backup pruned takes its snapshots with it.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;

use crate::backups::churn_disks;
use crate::qemu_servers::fetch_disk;
use crate::support::ceph::{self, Ceph};
use crate::support::fetch_disk::sparse_image;
use crate::support::image_server::ImageServer;
use crate::support::{Backend, ServerOptions, TestApp, binary};

fn extility(args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap()
}

fn succeeded(out: &std::process::Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

/// The SHA-256 of an image's bytes as a guest reads them (through a clone's parent).
fn checksum(ceph: &Ceph, pool: &str, image: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"rbd --conf "$0" export --no-progress "$1" - | sha256sum"#)
        .arg(&ceph.conf)
        .arg(format!("{pool}/{image}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Writes a megabyte of 0x5a at the image's start, as a guest would.
fn overwrite(ceph: &Ceph, pool: &str, image: &str) {
    let target = format!("rbd:{pool}/{image}:conf={}", ceph.conf.display());
    let out = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0x5a 0 1M", &target])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// The volume images the database at `db` names, by disk name.
async fn disk_volumes(db: &Path) -> Vec<(String, String)> {
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

/// A node on `backend` whose volumes are in a new pool of the shared test cluster, allowed to
/// fetch from loopback.
async fn app_on_a_new_pool(backend: Backend) -> (&'static Ceph, String, TestApp) {
    let (ceph, pool) = tokio::task::spawn_blocking(|| {
        let ceph = ceph::cluster();
        (ceph, ceph.new_pool())
    })
    .await
    .unwrap();
    let mut options = ServerOptions {
        args: ["--allow-fetch-from", "127.0.0.0/8"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    };
    options.args.extend(ceph.server_args(&pool));
    (ceph, pool, TestApp::start_with(backend, options).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rbd_backup_under_load_restores_every_disk_and_verify_finds_disagreements() {
    let (ceph, pool, app) = app_on_a_new_pool(Backend::Sqlite).await;
    let files = ImageServer::start().await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let (one, _) = sparse_image(8 << 20, 13, 3);
    let (two, _) = sparse_image(8 << 20, 29, 5);
    let one_url = files.put_data("one.img", one);
    let two_url = files.put_data("two.img", two);
    fetch_disk(&alice, &one_url, "one", vdc).await;
    let two = fetch_disk(&alice, &two_url, "two", vdc).await;
    // A snapshot leaves the disk an RBD clone of the snapshot's volume.
    alice
        .call(
            "CreateDiskSnapshot",
            json!({"disk_id": two["disk_id"], "name": "before"}),
        )
        .await;
    let extra = fetch_disk(&alice, &two_url, "extra", vdc).await;
    let storage = ceph.server_args(&pool);
    let storage: Vec<&str> = storage.iter().map(String::as_str).collect();
    let data_dir = app.server.data_dir.to_str().unwrap();
    let live = disk_volumes(&app.server.data_dir.join("extility.db")).await;
    let extra_image = live.iter().find(|(n, _)| n == "extra").unwrap().1.clone();
    let before: Vec<(String, String, String)> = live
        .iter()
        .filter(|(name, _)| name != "extra")
        .map(|(name, image)| (name.clone(), image.clone(), checksum(ceph, &pool, image)))
        .collect();

    // Load while the backup runs: disks fetched and deleted, over and over.
    let stop = Arc::new(AtomicBool::new(false));
    let load = churn_disks(&alice, &one_url, vdc, &stop);
    let dest = app.dir.path().join("backup");
    let mut args = vec![
        "backup",
        dest.to_str().unwrap(),
        "--data-dir",
        data_dir,
        "--database-url",
        &app.server.db_url,
    ];
    args.extend(&storage);
    let out = extility(&args);
    stop.store(true, Ordering::Relaxed);
    succeeded(&out);
    assert!(load.await.unwrap() >= 1);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("SNAPSHOTS")).unwrap()).unwrap();
    let snapshot = manifest["snapshot"].as_str().unwrap();
    assert!(snapshot.starts_with("extility-backup-"), "{manifest}");

    // A disk deleted after the backup goes, its backup snapshot with it (old backups never
    // block a delete).
    alice
        .call("DeleteDisk", json!({"disk_id": extra["disk_id"]}))
        .await;
    let images = ceph.rbd(&["ls", &pool]);
    assert!(!images.lines().any(|l| l == extra_image), "{images}");

    // New data on every disk after the backup.
    for (_, image, sum) in &before {
        overwrite(ceph, &pool, image);
        assert_ne!(&checksum(ceph, &pool, image), sum);
    }

    // Not over a live data directory.
    let mut restore = vec!["restore", dest.to_str().unwrap(), "--data-dir", data_dir];
    restore.extend(&storage);
    let out = extility(&restore);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is live"),
        "{out:?}"
    );
    drop(app.server);

    let restored = app.dir.path().join("restored");
    let mut restore = vec![
        "restore",
        dest.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ];
    restore.extend(&storage);
    succeeded(&extility(&restore));

    // Every disk reads as at the backup.
    let volumes = disk_volumes(&restored.join("extility.db")).await;
    for (name, image, sum) in &before {
        assert!(
            volumes.contains(&(name.clone(), image.clone())),
            "{volumes:?}"
        );
        assert_eq!(&checksum(ceph, &pool, image), sum, "disk {name} ({image})");
    }

    // verify: the rows of disks deleted since the database copy are the only findings.
    let mut verify = vec!["verify", "--data-dir", restored.to_str().unwrap()];
    verify.extend(&storage);
    let out = extility(&verify);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let deleted: Vec<&String> = volumes
        .iter()
        .filter(|(name, _)| name.starts_with("load-") || name == "extra")
        .map(|(_, image)| image)
        .collect();
    for line in report.lines().filter(|l| l.contains("missing")) {
        assert!(
            deleted.iter().any(|image| line.contains(image.as_str())),
            "{report}"
        );
    }
    if !report.contains("missing") {
        succeeded(&out);
    }

    // A planted image no row names, and a row whose image was removed: both reported, and
    // neither deleted nor made.
    let orphan = format!(
        "extility-vol-{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
        uuid::Uuid::new_v4().simple()
    );
    ceph.rbd(&["create", "--size", "1M", &format!("{pool}/{orphan}")]);
    let (_, removed) = volumes.iter().find(|(n, _)| n == "one").unwrap();
    ceph.rbd(&["snap", "purge", &format!("{pool}/{removed}")]);
    ceph.rbd(&["rm", &format!("{pool}/{removed}")]);
    let out = extility(&verify);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!("stored volume {orphan} has no row")),
        "{report}"
    );
    assert!(
        report.contains(&format!("its file {removed} is missing")),
        "{report}"
    );
    let images = ceph.rbd(&["ls", &pool]);
    assert!(images.lines().any(|l| l == orphan), "{images}");
    assert!(!images.lines().any(|l| l == removed), "{images}");
}

/// On PostgreSQL, `extility backup --storage rbd` dumps the database itself (`pg_dump`), between
/// the two rounds of snapshots, and every volume the dump names has the backup's snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rbd_backup_on_postgresql_dumps_the_database_and_snapshots_its_volumes() {
    let (ceph, pool, app) = app_on_a_new_pool(Backend::Postgres).await;
    let files = ImageServer::start().await;
    let alice = app.alice();
    let (data, _) = sparse_image(4 << 20, 7, 11);
    let url = files.put_data("disk.img", data);
    fetch_disk(&alice, &url, "kept", app.alice.vdc_id).await;

    let dest = app.dir.path().join("backup");
    let storage = ceph.server_args(&pool);
    let mut args = vec![
        "backup",
        dest.to_str().unwrap(),
        "--data-dir",
        app.server.data_dir.to_str().unwrap(),
        "--database-url",
        &app.server.db_url,
    ];
    args.extend(storage.iter().map(String::as_str));
    succeeded(&extility(&args));

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("SNAPSHOTS")).unwrap()).unwrap();
    let snapshot = manifest["snapshot"].as_str().unwrap();
    let out = Command::new("pg_restore")
        .args(["--data-only", "--table=volumes", "--file=-"])
        .arg(dest.join("extility.pgdump"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let dumped = String::from_utf8_lossy(&out.stdout);
    let named: Vec<&str> = dumped
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|word| word.starts_with("extility-vol-"))
        .collect();
    assert!(!named.is_empty(), "{dumped}");
    for image in named {
        assert!(
            manifest["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == image),
            "{image} is not in {manifest}"
        );
        let snapshots = ceph.rbd(&["snap", "ls", &format!("{pool}/{image}")]);
        assert!(snapshots.contains(snapshot), "{image}: {snapshots}");
    }

    // A newer backup keeping only itself prunes this one: its folder and its snapshots.
    let newer = app.dir.path().join("newer");
    let mut args = vec![
        "backup",
        newer.to_str().unwrap(),
        "--prune-keep",
        "1",
        "--data-dir",
        app.server.data_dir.to_str().unwrap(),
        "--database-url",
        &app.server.db_url,
    ];
    args.extend(storage.iter().map(String::as_str));
    let said = succeeded(&extility(&args));
    assert!(said.contains("pruning removed 1 backups"), "{said}");
    assert!(!dest.exists() && newer.join("SNAPSHOTS").exists());
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(newer.join("SNAPSHOTS")).unwrap()).unwrap();
    for image in manifest["volumes"].as_array().unwrap() {
        let snapshots = ceph.rbd(&["snap", "ls", &format!("{pool}/{}", image.as_str().unwrap())]);
        assert!(!snapshots.contains(snapshot), "{image}: {snapshots}");
        assert!(
            snapshots.contains(kept["snapshot"].as_str().unwrap()),
            "{image}: {snapshots}"
        );
    }
}
