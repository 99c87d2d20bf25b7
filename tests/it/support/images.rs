//! Helpers for the image, snapshot and publishing tests: finding the file behind a disk, image
//! or snapshot (from the server's database), putting bytes into it as a guest would, and
//! reading what a disk holds through its qcow2 backing chain.
#![allow(dead_code)]

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use sqlx::{AnyPool, Row};

use crate::support::{Api, Customer, TestApp};

pub const GIB: u64 = 1 << 30;
pub const MIB: u64 = 1 << 20;

/// The demo catalogue: server offer 18, disk offers 29 (1 GB) and 31 (20 GB), blank image 66,
/// image offer 40.
pub const SERVER_OFFER: i64 = 18;
pub const DISK_1GB: i64 = 29;
pub const DISK_20GB: i64 = 31;
pub const BLANK_IMAGE: i64 = 66;
pub const IMAGE_OFFER: i64 = 40;

/// A volume file of the server's storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub path: PathBuf,
    pub format: String,
}

impl Volume {
    /// Writes bytes as a guest would: straight into a raw file, through qemu-io into a qcow2
    /// overlay (which then holds them in its own clusters).
    pub fn write(&self, offset: u64, bytes: &[u8]) {
        if self.format == "raw" {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&self.path)
                .unwrap();
            file.write_all_at(bytes, offset).unwrap();
            file.sync_all().unwrap();
        } else {
            let first = bytes[0];
            assert!(
                bytes.iter().all(|b| *b == first),
                "qcow2 volumes are written with a fill pattern"
            );
            self.write_pattern(offset, bytes.len() as u64, first);
        }
    }

    /// Fills `len` bytes at `offset` with `byte`.
    pub fn write_pattern(&self, offset: u64, len: u64, byte: u8) {
        if self.format == "raw" {
            self.write(offset, &vec![byte; len as usize]);
            return;
        }
        let out = Command::new("qemu-io")
            .args(["-f", &self.format, "-c"])
            .arg(format!("write -P {byte} {offset} {len}"))
            .arg(&self.path)
            .output()
            .expect("running qemu-io (Debian package qemu-utils)");
        assert!(
            out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("error"),
            "qemu-io write failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// What the volume reads at `offset`, through its backing chain.
    pub fn read(&self, offset: u64, len: u64) -> Vec<u8> {
        if self.format == "raw" {
            let file = std::fs::File::open(&self.path).unwrap();
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, offset).unwrap();
            return buf;
        }
        // qemu's raw driver takes sector-aligned windows: read one and cut the range out.
        let start = offset / 512 * 512;
        let end = (offset + len).div_ceil(512) * 512;
        let dir = tempfile::tempdir().unwrap();
        let out_path = dir.path().join("range.raw");
        let out = Command::new("qemu-img")
            .args(["convert", "-U", "--image-opts"])
            .arg(format!(
                "driver=raw,offset={start},size={},file.driver={},file.file.filename={}",
                end - start,
                self.format,
                self.path.display()
            ))
            .args(["-O", "raw"])
            .arg(&out_path)
            .output()
            .expect("running qemu-img");
        assert!(
            out.status.success(),
            "qemu-img convert failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let window = std::fs::read(&out_path).unwrap();
        window[(offset - start) as usize..(offset - start + len) as usize].to_vec()
    }

    /// Bytes the file takes on disk (not counting its backing files).
    pub fn allocated(&self) -> u64 {
        std::fs::metadata(&self.path).unwrap().blocks() * 512
    }

    /// The size the guest sees.
    pub fn virtual_size(&self) -> u64 {
        if self.format == "raw" {
            return std::fs::metadata(&self.path).unwrap().len();
        }
        let out = Command::new("qemu-img")
            .args(["info", "-U", "--output=json"])
            .arg(&self.path)
            .output()
            .unwrap();
        let info: Value = serde_json::from_slice(&out.stdout).unwrap();
        info["virtual-size"].as_u64().unwrap()
    }

    pub fn exists(&self) -> bool {
        self.path.exists()
    }
}

/// The server's database, read to find volume files (and written to stand in for work done
/// elsewhere).
pub struct ServerDb {
    pool: AnyPool,
    dir: PathBuf,
}

impl ServerDb {
    pub async fn open(app: &TestApp) -> ServerDb {
        sqlx::any::install_default_drivers();
        ServerDb {
            pool: AnyPool::connect(&app.server.db_url).await.unwrap(),
            dir: app.server.data_dir.join("volumes"),
        }
    }

    async fn find(&self, sql: &'static str, id: i64) -> Volume {
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("no volume for {id}: {e}"));
        Volume {
            path: self.dir.join(row.get::<String, _>(0)),
            format: row.get(1),
        }
    }

    pub async fn of_disk(&self, disk_id: i64) -> Volume {
        self.find(
            "SELECT v.file, v.format FROM disks d JOIN volumes v ON v.id = d.volume_id \
             WHERE d.id = $1",
            disk_id,
        )
        .await
    }

    pub async fn of_image(&self, image_id: i64) -> Volume {
        self.find(
            "SELECT v.file, v.format FROM images i JOIN volumes v ON v.id = i.volume_id \
             WHERE i.id = $1",
            image_id,
        )
        .await
    }

    pub async fn of_snapshot(&self, snapshot_id: i64) -> Volume {
        self.find(
            "SELECT v.file, v.format FROM snapshots s JOIN volumes v ON v.id = s.volume_id \
             WHERE s.id = $1",
            snapshot_id,
        )
        .await
    }

    /// Records a CreateImage job of `disk_id` as running on another node (its lease far from
    /// running out), so that it stays unfinished for as long as the test needs.
    pub async fn image_job_running_elsewhere(&self, customer_id: i64, disk_id: i64) -> i64 {
        let now = chrono::Utc::now().timestamp_millis();
        sqlx::query_scalar(
            "INSERT INTO jobs (uuid, customer_id, job_type, name, status, item_type, item_id, \
             lease_owner, lease_expires, created, started, attempts) \
             VALUES ($1, $2, 'CreateImage', 'Create image elsewhere', 2, 'disk', $3, \
             'another-node', $4, $5, $5, 1) RETURNING id",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(customer_id)
        .bind(disk_id)
        .bind(now + 3_600_000)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// The files the `volumes` table names.
    pub async fn volume_files(&self) -> std::collections::BTreeSet<String> {
        sqlx::query_scalar::<_, String>("SELECT file FROM volumes")
            .fetch_all(&self.pool)
            .await
            .unwrap()
            .into_iter()
            .collect()
    }

    /// How many times a job was claimed (more than once: an attempt was interrupted).
    pub async fn job_attempts(&self, job_id: i64) -> i64 {
        sqlx::query_scalar("SELECT attempts FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// The job an image records as having made it.
    pub async fn image_source_job(&self, image_id: i64) -> Option<i64> {
        sqlx::query_scalar("SELECT source_job_id FROM images WHERE id = $1")
            .bind(image_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Stands in for a node that died after its CreateImage job of `disk_id` had committed
    /// `image_id` but before it recorded the job as finished: a running job whose lease has
    /// run out, which the image names as its maker. Returns the job's id.
    pub async fn image_job_interrupted_after_commit(
        &self,
        customer_id: i64,
        disk_id: i64,
        image_id: i64,
    ) -> i64 {
        let now = chrono::Utc::now().timestamp_millis();
        let mut tx = self.pool.begin().await.unwrap();
        let job_id: i64 = sqlx::query_scalar(
            "INSERT INTO jobs (uuid, customer_id, job_type, name, status, item_type, item_id, \
             params, lease_owner, lease_expires, created, started, attempts) \
             VALUES ($1, $2, 'CreateImage', 'Create image before a crash', 2, 'disk', $3, \
             $4, 'a-node-that-died', 1, $5, $5, 1) RETURNING id",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(customer_id)
        .bind(disk_id)
        .bind(r#"{"name":"before a crash","default_username":null,"generate_password":true}"#)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        sqlx::query("UPDATE images SET source_job_id = $1 WHERE id = $2")
            .bind(job_id)
            .bind(image_id)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        job_id
    }

    /// Records a job as failed, as its node would when it ends.
    pub async fn job_failed(&self, job_id: i64) {
        sqlx::query(
            "UPDATE jobs SET status = 3, lease_owner = NULL, lease_expires = NULL, \
             finished = $1 WHERE id = $2",
        )
        .bind(chrono::Utc::now().timestamp_millis())
        .bind(job_id)
        .execute(&self.pool)
        .await
        .unwrap();
    }

    /// Adds a usage line as the FetchDisk job records one (FetchDisk is built elsewhere).
    pub async fn record_bytes_fetched(&self, customer_id: i64, bytes: i64, at_ms: i64) {
        sqlx::query(
            "INSERT INTO usage_records (customer_id, kind, quantity, created) \
             VALUES ($1, 'bytes_fetched', $2, $3)",
        )
        .bind(customer_id)
        .bind(bytes)
        .bind(at_ms)
        .execute(&self.pool)
        .await
        .unwrap();
    }
}

/// What the test writes into a source disk: a boot sector, and data scattered over 20 GB.
pub struct Contents;

impl Contents {
    pub const BOOT: &'static [u8] = b"EXTILITY TEST BOOT SECTOR\x55\xaa";
    pub const SCATTERED: [(u64, u64, u8); 3] = [
        (7 * GIB, 64 * 1024, 0xb2),
        (12 * GIB + 8192, 4096, 0xc3),
        (19 * GIB + 4096, 4096, 0xd4),
    ];

    pub fn write(volume: &Volume) {
        volume.write(0, Self::BOOT);
        for (offset, len, byte) in Self::SCATTERED {
            volume.write_pattern(offset, len, byte);
        }
    }

    /// Asserts the volume reads what [`Contents::write`] wrote, and zeros around it.
    pub fn check(volume: &Volume, what: &str) {
        assert_eq!(
            volume.read(0, Self::BOOT.len() as u64),
            Self::BOOT,
            "{what}: boot sector"
        );
        for (offset, len, byte) in Self::SCATTERED {
            assert_eq!(
                volume.read(offset, len),
                vec![byte; len as usize],
                "{what}: {len} bytes at {offset}"
            );
            assert_eq!(
                volume.read(offset + len, 4096),
                vec![0u8; 4096],
                "{what}: zeros after {offset}"
            );
        }
    }
}

pub fn id(value: &Value, field: &str) -> i64 {
    value[field]
        .as_i64()
        .unwrap_or_else(|| panic!("no {field} in {value}"))
}

pub async fn first_vdc(api: &Api) -> i64 {
    let vdcs = api.call("ListVDCs", json!({})).await;
    id(&vdcs[0], "vdc_id")
}

pub async fn create_server(api: &Api, vdc: i64, name: &str, image: i64, disk_offer: i64) -> Value {
    api.call(
        "CreateServer",
        json!({"vdc_id": vdc, "vlan_id": -1, "server_name": name, "image_id": image,
               "server_productoffer_id": SERVER_OFFER, "disk_productoffer_ids": [disk_offer]}),
    )
    .await
}

pub async fn boot_disk(server: &Value) -> i64 {
    id(&server["disks"][0], "disk_id")
}

pub async fn start(api: &Api, server_id: i64) {
    let job = api
        .call("StartServer", json!({"server_id": server_id}))
        .await;
    api.job_ok(id(&job, "job_id")).await;
}

pub async fn stop(api: &Api, server_id: i64) {
    let job = api
        .call(
            "StopServer",
            json!({"server_id": server_id, "stop_method": 2}),
        )
        .await;
    api.job_ok(id(&job, "job_id")).await;
}

/// Runs CreateImage to the end and returns the new image's id.
pub async fn make_image(api: &Api, disk_id: i64, name: &str) -> i64 {
    let job = api
        .call(
            "CreateImage",
            json!({"disk_id": disk_id, "name": name, "default_username": "admin",
                   "generate_password": true}),
        )
        .await;
    let job = api.job_ok(id(&job, "job_id")).await;
    assert_eq!(job["item_type"], "image", "{job}");
    id(&job, "item_id")
}

pub async fn image_ids(api: &Api) -> Vec<i64> {
    let images = api.call("ListImages", json!({})).await;
    images
        .as_array()
        .unwrap()
        .iter()
        .map(|i| id(i, "image_id"))
        .collect()
}

pub async fn listed_image(api: &Api, image_id: i64) -> Option<Value> {
    let images = api.call("ListImages", json!({})).await;
    images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image_id"] == image_id)
        .cloned()
}

/// Runs `extility billing-entity add NAME` against the app's database.
pub fn billing_entity_add(app: &TestApp, name: &str) -> Result<String, String> {
    let out = Command::new(crate::support::binary())
        .args(["billing-entity", "add", name, "--data-dir"])
        .arg(&app.server.data_dir)
        .arg("--database-url")
        .arg(&app.server.db_url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("billing_entity_id="), "{text}");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("billing_entity_uuid="))
        .expect("billing_entity_uuid= line")
        .trim()
        .to_string())
}

/// Adds a customer with extra `customer add` arguments (`--billing-entity NAME`, `--admin`).
pub fn add_customer(app: &TestApp, email: &str, extra: &[&str]) -> (Customer, Api) {
    let customer = crate::support::add_customer(
        &app.server.data_dir,
        &app.server.db_url,
        email,
        "long-enough-password",
        extra,
    );
    let api = app.server.api(&customer.email, &customer.password);
    (customer, api)
}

pub fn path_exists(path: &Path) -> bool {
    path.exists()
}
