//! The server's database as the tests read it (and write it, to stand in for work done
//! elsewhere), and the volume files it names: the one place that finds the file behind a disk,
//! image or snapshot ([`ServerDb::of_disk`], [`ServerDb::of_image`], [`ServerDb::of_snapshot`]).

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use sqlx::{AnyPool, Row};

use super::TestServer;

/// A volume of the server's storage: a file (`path`), or with RBD storage the image `path`
/// names in the pool `rbd` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub path: PathBuf,
    pub format: String,
    pub rbd: Option<RbdPool>,
}

/// A pool of the test Ceph cluster ([`super::ceph`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbdPool {
    pub pool: String,
    pub conf: PathBuf,
}

impl RbdPool {
    /// Reads the RBD flags a server was started with.
    pub fn of(server: &TestServer) -> Option<RbdPool> {
        let args = &server.options().args;
        let flag = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .map(|i| args[i + 1].clone())
        };
        Some(RbdPool {
            pool: flag("--rbd-pool")?,
            conf: flag("--ceph-conf")?.into(),
        })
    }
}

impl Volume {
    /// The RBD image as QEMU's tools open it (`--image-opts`), with `extra` raw-driver options.
    fn image_opts(&self, rbd: &RbdPool, extra: &str) -> String {
        format!(
            "driver=raw{extra},file.driver=rbd,file.pool={},file.image={},file.conf={}",
            rbd.pool,
            self.path.display(),
            rbd.conf.display()
        )
    }

    pub fn rbd_json(&self, rbd: &RbdPool, command: &str) -> Value {
        let out = Command::new("rbd")
            .arg("--conf")
            .arg(&rbd.conf)
            .args([command, "--format", "json"])
            .arg(format!("{}/{}", rbd.pool, self.path.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rbd {command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Writes bytes as a guest would: straight into a raw file, through qemu-io into a qcow2
    /// overlay (which then holds them in its own clusters).
    pub fn write(&self, offset: u64, bytes: &[u8]) {
        if self.format == "raw" && self.rbd.is_none() {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&self.path)
                .unwrap();
            file.write_all_at(bytes, offset).unwrap();
            file.sync_all().unwrap();
        } else {
            // qemu-io writes them from a file (`write -s`), through the image's driver.
            let source = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(source.path(), bytes).unwrap();
            self.qemu_io(&format!(
                "write -s {} {offset} {}",
                source.path().display(),
                bytes.len()
            ));
        }
    }

    /// Fills `len` bytes at `offset` with `byte`.
    pub fn write_pattern(&self, offset: u64, len: u64, byte: u8) {
        if self.format == "raw" && self.rbd.is_none() {
            self.write(offset, &vec![byte; len as usize]);
            return;
        }
        self.qemu_io(&format!("write -P {byte} {offset} {len}"));
    }

    /// Fills each `(offset, len, byte)` range, in one run of qemu-io.
    pub fn write_patterns(&self, writes: &[(u64, u64, u8)]) {
        let commands: Vec<String> = writes
            .iter()
            .map(|(offset, len, byte)| format!("write -P {byte} {offset} {len}"))
            .collect();
        self.qemu_io_all(&commands);
    }

    /// Runs one qemu-io command on the volume, through its format and backing chain.
    fn qemu_io(&self, qemu_io_command: &str) {
        self.qemu_io_all(&[qemu_io_command.to_string()]);
    }

    fn qemu_io_all(&self, qemu_io_commands: &[String]) {
        let qemu_io_command = qemu_io_commands.join("; ");
        let mut command = Command::new("qemu-io");
        match &self.rbd {
            Some(rbd) => command.arg("--image-opts").arg(self.image_opts(rbd, "")),
            None => command.args(["-f", &self.format]).arg(&self.path),
        };
        for c in qemu_io_commands {
            command.arg("-c").arg(c);
        }
        let out = command
            .output()
            .expect("running qemu-io (Debian package qemu-utils)");
        assert!(
            out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("error"),
            "qemu-io {qemu_io_command} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// What the volume reads at `offset`, through its backing chain.
    pub fn read(&self, offset: u64, len: u64) -> Vec<u8> {
        if self.format == "raw" && self.rbd.is_none() {
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
        let window = format!(",offset={start},size={}", end - start);
        let opts = match &self.rbd {
            Some(rbd) => self.image_opts(rbd, &window),
            None => format!(
                "driver=raw{window},file.driver={},file.file.filename={}",
                self.format,
                self.path.display()
            ),
        };
        let out = Command::new("qemu-img")
            .args(["convert", "-U", "--image-opts"])
            .arg(opts)
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
    /// With RBD, what `rbd du` counts: whole 4 MiB objects, and of a clone only its own.
    pub fn allocated(&self) -> u64 {
        if let Some(rbd) = &self.rbd {
            return self.rbd_json(rbd, "du")["images"][0]["used_size"]
                .as_u64()
                .unwrap();
        }
        std::fs::metadata(&self.path).unwrap().blocks() * 512
    }

    /// The bytes of data the volume itself holds: of a file, the blocks it takes on disk; of
    /// an RBD image, the extents `rbd diff` lists as written.
    pub fn data_bytes(&self) -> u64 {
        let Some(rbd) = &self.rbd else {
            return self.allocated();
        };
        self.rbd_json(rbd, "diff")
            .as_array()
            .unwrap()
            .iter()
            .map(|extent| extent["length"].as_u64().unwrap())
            .sum()
    }

    /// The size the guest sees.
    pub fn virtual_size(&self) -> u64 {
        if let Some(rbd) = &self.rbd {
            return self.rbd_json(rbd, "info")["size"].as_u64().unwrap();
        }
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
        match &self.rbd {
            Some(rbd) => Command::new("rbd")
                .arg("--conf")
                .arg(&rbd.conf)
                .arg("info")
                .arg(format!("{}/{}", rbd.pool, self.path.display()))
                .output()
                .unwrap()
                .status
                .success(),
            None => self.path.exists(),
        }
    }
}

/// The server's database, read to find volume files (and written to stand in for work done
/// elsewhere).
pub struct ServerDb {
    pool: AnyPool,
    dir: PathBuf,
    rbd: Option<RbdPool>,
}

impl ServerDb {
    pub async fn open(server: &TestServer) -> ServerDb {
        sqlx::any::install_default_drivers();
        ServerDb {
            pool: AnyPool::connect(&server.db_url).await.unwrap(),
            dir: server.data_dir.join("volumes"),
            rbd: RbdPool::of(server),
        }
    }

    /// For the test's own queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Runs a query taking one id and returning one integer (or NULL).
    pub async fn query_i64(&self, sql: &'static str, id: i64) -> Option<i64> {
        sqlx::query_scalar(sql)
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn find(&self, sql: &'static str, id: i64) -> Volume {
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("no volume for {id}: {e}"));
        let file = row.get::<String, _>(0);
        Volume {
            path: match self.rbd {
                Some(_) => PathBuf::from(file),
                None => self.dir.join(file),
            },
            format: row.get(1),
            rbd: self.rbd.clone(),
        }
    }

    /// The RBD pool the server keeps its volumes in, if it uses RBD storage.
    pub fn rbd(&self) -> Option<&RbdPool> {
        self.rbd.as_ref()
    }

    /// What the volume store holds: the files of the volumes folder, or the images of the
    /// server's RBD pool (volumes, and staging images not yet renamed to one).
    pub fn stored(&self) -> Vec<String> {
        match &self.rbd {
            Some(rbd) => {
                let out = Command::new("rbd")
                    .arg("--conf")
                    .arg(&rbd.conf)
                    .args(["ls", "--format", "json", &rbd.pool])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "rbd ls: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                serde_json::from_slice(&out.stdout).unwrap()
            }
            None => match std::fs::read_dir(&self.dir) {
                Ok(entries) => entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect(),
                Err(_) => Vec::new(),
            },
        }
    }

    /// The volume file behind a disk.
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
        // As the job's commit records its result, in the transaction that saved the image.
        sqlx::query(
            "UPDATE jobs SET result_committed = 1, item_type = 'image', item_id = $1 \
             WHERE id = $2",
        )
        .bind(image_id)
        .bind(job_id)
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
