//! A node whose data directory's file system fills up: its data directory is a small ext4
//! file system mounted from a file (`mount -o loop`), with the SQLite database on it too. A
//! FetchDisk larger than the space left fails with INSUFFICIENT_STORAGE, leaves no volume and
//! no staged file, and takes the file system no lower than the node's reserve, so the server
//! (and its database on the same file system) keeps answering; once space is freed the same
//! fetch succeeds.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::support::fetch_disk::{allowing, fetch, fetch_args};
use crate::support::image_server::ImageServer;
use crate::support::{Backend, TestDatabase, TestServer, db_test};

const MIB: u64 = 1 << 20;

/// A file system made in a file and mounted on a folder; unmounted when dropped.
struct LoopMount {
    at: PathBuf,
}

impl LoopMount {
    fn new(image: &Path, at: &Path, size: u64) -> LoopMount {
        std::fs::File::create(image).unwrap().set_len(size).unwrap();
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(image));
        std::fs::create_dir_all(at).unwrap();
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(image)
            .arg(at));
        LoopMount {
            at: at.to_path_buf(),
        }
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let done = Command::new("umount").arg(&self.at).status();
        if !done.is_ok_and(|s| s.success()) {
            // Something still holds a file there: detach it now, unmounted when released.
            let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Bytes free for anyone on the file system of `path`.
fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().nth(1).unwrap().trim().parse().unwrap()
}

/// `len` bytes no compressor shrinks and no block of which is zero.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len);
    data
}

fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

async fn a_fetch_that_fills_the_disk_fails_cleanly(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mount = LoopMount::new(&dir.path().join("fs.img"), &data_dir, 160 * MIB);
    let db = TestDatabase::new(backend, &data_dir).await;
    let images = ImageServer::start().await;
    let image = noise((48 * MIB) as usize);
    let url = images.put_data("/big.img", image);
    let mut options = allowing("127.0.0.0/8");
    options
        .args
        .extend(["--min-free-space".to_string(), "8M".to_string()]);
    let mut server = TestServer::spawn(&db, &data_dir, options);
    let alice = server.add_customer("alice@example.com", "alice-password", &[]);
    let api = server.api(&alice.email, &alice.password);

    // The operator's other files leave 32 MiB: enough to start the fetch (the reserve is 8 MiB),
    // not for its 48 MiB.
    let filler = data_dir.join("filler");
    let fill = free_bytes(&data_dir) - 32 * MIB;
    run(Command::new("fallocate")
        .args(["-l", &fill.to_string()])
        .arg(&filler));

    let job = api
        .wait_job(fetch(&api, fetch_args(&url, alice.vdc_id, "big")).await)
        .await;
    assert_eq!(job["status"], 3, "{job}");
    assert_eq!(job["error_code"], "INSUFFICIENT_STORAGE", "{job}");
    let message = job["error_message"].as_str().unwrap();
    assert!(message.contains("full"), "{message}");
    // Nothing half-made: no disk, no volume, no staged file.
    assert_eq!(
        api.call("ListDisks", json!({"vdc_id": alice.vdc_id})).await,
        json!([])
    );
    assert_eq!(entries(&data_dir.join("volumes")), Vec::<String>::new());
    assert_eq!(entries(&data_dir.join("staging")), Vec::<String>::new());
    // The fetch stopped at the reserve, and the space it took is free again.
    assert!(
        free_bytes(&data_dir) > 24 * MIB,
        "{}",
        free_bytes(&data_dir)
    );
    // The server answers, reads and writes (its database is on the same file system).
    api.call("ListVDCs", json!({})).await;
    let vdc = api
        .call("CreateVDC", json!({"vdc_name": "still here"}))
        .await;
    api.call("DeleteVDC", json!({"vdc_id": vdc["vdc_id"]}))
        .await;

    // Space freed, the same fetch succeeds.
    std::fs::remove_file(&filler).unwrap();
    let job = api
        .wait_job(fetch(&api, fetch_args(&url, alice.vdc_id, "big")).await)
        .await;
    assert_eq!(job["status"], 1, "{job}");
    let disks = api.call("ListDisks", json!({"vdc_id": alice.vdc_id})).await;
    assert_eq!(disks.as_array().unwrap().len(), 1, "{disks}");
    assert_eq!(entries(&data_dir.join("staging")), Vec::<String>::new());

    server.kill9();
    drop(db);
    drop(mount);
}
db_test!(
    a_fetch_that_fills_the_disk_fails_cleanly,
    a_fetch_that_fills_the_disk_fails_cleanly
);
