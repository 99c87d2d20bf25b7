//! A backup killed mid-copy leaves its holding folder (`backup-hold-*`, hard links of every
//! volume beside `volumes`); the next backup removes it, and never the folder of a backup that
//! still runs (locked by it for its lifetime).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::catalogue::DISK_1GB;
use crate::support::server_db::ServerDb;
use crate::support::{Backend, TestApp, binary, db_test, id};

/// The holding folders (and folders of theirs half made or removed) beside `volumes`.
fn holds(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("backup-"))
        .collect();
    names.sort();
    names
}

fn backup_command(app: &TestApp, dest: &Path) -> Command {
    let mut cmd = Command::new(binary());
    cmd.arg("backup")
        .arg(dest)
        .arg("--data-dir")
        .arg(&app.server.data_dir)
        .arg("--database-url")
        .arg(&app.server.db_url)
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL");
    cmd
}

fn signal(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {signal}");
}

/// Starts a backup into `dest` and stops it (SIGSTOP) once it holds the volumes and has begun
/// copying them: returns it, stopped, and its holding folder.
async fn stopped_mid_copy(app: &TestApp, dest: &Path, volume: &str) -> (Child, String) {
    let before = holds(&app.server.data_dir);
    let mut child = backup_command(app, dest)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let copy = dest.join("volumes").join(volume);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mine: Vec<String> = holds(&app.server.data_dir)
            .into_iter()
            .filter(|h| h.starts_with("backup-hold-") && !before.contains(h))
            .collect();
        if mine.len() == 1 && copy.exists() {
            signal(&child, "-STOP");
            assert_eq!(
                child.try_wait().unwrap(),
                None,
                "the backup ended before it could be stopped mid-copy"
            );
            assert!(
                app.server.data_dir.join(&mine[0]).is_dir(),
                "stopped after its hold was released"
            );
            return (child, mine[0].clone());
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the backup ended ({status}) before it was seen copying");
        }
        assert!(Instant::now() < deadline, "the backup never began copying");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn a_killed_backups_hold_goes_and_a_running_ones_stays(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.alice();
    let db = ServerDb::open(&app.server).await;
    // A disk with enough data that its copy takes a while.
    let disk = alice
        .call(
            "CreateDisk",
            json!({"vdc_id": app.alice.vdc_id, "name": "big", "disk_productoffer_id": DISK_1GB,
                   "image_id": 0}),
        )
        .await;
    let volume = db.of_disk(id(&disk, "disk_id")).await;
    const CHUNK: u64 = 32 << 20;
    for i in 0..12 {
        volume.write_pattern(i * CHUNK, CHUNK, 1 + i as u8);
    }
    let volume_name = volume
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let dir = tempfile::tempdir().unwrap();
    let dest = |name: &str| -> PathBuf { dir.path().join(name) };
    let data_dir = app.server.data_dir.clone();

    // Killed mid-copy: its hold is left.
    let (mut killed, killed_hold) = stopped_mid_copy(&app, &dest("killed"), &volume_name).await;
    signal(&killed, "-KILL");
    killed.wait().unwrap();
    assert_eq!(
        holds(&data_dir),
        vec![killed_hold.clone()],
        "the hold is left"
    );

    // Another backup runs (stopped mid-copy, its hold locked) while a third one is made.
    let (mut running, running_hold) = stopped_mid_copy(&app, &dest("running"), &volume_name).await;
    let out = backup_command(&app, &dest("next")).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dest("next").join("BACKUP").exists());
    assert_eq!(
        holds(&data_dir),
        vec![running_hold.clone()],
        "the killed backup's hold is gone, the running one's kept"
    );

    // The running backup goes on and ends well, with nothing left beside the volumes.
    signal(&running, "-CONT");
    let status = running.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(running.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(dest("running").join("BACKUP").exists());
    assert_eq!(holds(&data_dir), Vec::<String>::new());
    for made in ["next", "running"] {
        let copy = std::fs::read(dest(made).join("volumes").join(&volume_name)).unwrap();
        for i in 0..12 {
            assert_eq!(copy[(i * CHUNK) as usize], 1 + i as u8, "{made}: chunk {i}");
        }
    }
}
db_test!(
    a_killed_backups_hold_goes_and_a_running_ones_stays,
    a_killed_backups_hold_goes_and_a_running_ones_stays
);

/// A node that starts removes what killed backups left, too.
async fn a_starting_node_removes_a_killed_backups_hold(backend: Backend) {
    let mut app = TestApp::start(backend).await;
    let data_dir = app.server.data_dir.clone();
    let dir = tempfile::tempdir().unwrap();
    // A disk so that the hold holds something.
    app.alice()
        .call(
            "CreateDisk",
            json!({"vdc_id": app.alice.vdc_id, "name": "held", "disk_productoffer_id": DISK_1GB,
                   "image_id": 0}),
        )
        .await;
    let db = ServerDb::open(&app.server).await;
    let disk = app
        .alice()
        .call("ListDisks", json!({"vdc_id": app.alice.vdc_id}))
        .await;
    let volume = db.of_disk(id(&disk[0], "disk_id")).await;
    for i in 0..4 {
        volume.write_pattern(i * (32 << 20), 32 << 20, 7);
    }
    let name = volume
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let (mut killed, hold) = stopped_mid_copy(&app, &dir.path().join("killed"), &name).await;
    signal(&killed, "-KILL");
    killed.wait().unwrap();
    assert_eq!(holds(&data_dir), vec![hold]);
    app.server.restart();
    assert_eq!(holds(&data_dir), Vec::<String>::new());
}
db_test!(
    a_starting_node_removes_a_killed_backups_hold,
    a_starting_node_removes_a_killed_backups_hold
);
