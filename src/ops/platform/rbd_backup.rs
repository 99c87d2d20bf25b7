//! Backups of nodes whose volumes are RBD images (`extility backup|restore --storage rbd`).
//!
//! - **backup**: every volume image of the pool gets the snapshot `extility-backup-<ms>`
//!   (instant, and it keeps the image's bytes as they were while the image is written on),
//!   then the database is copied (SQLite: `VACUUM INTO`, one read transaction; PostgreSQL:
//!   `pg_dump`, one repeatable-read transaction), then every volume the copy names that had
//!   no snapshot yet (made between the two) gets one. The snapshots were all taken before the
//!   copy's transaction, or after it for volumes it names that are new: the analogue of the
//!   file backup's hard links. The backup folder holds the database copy, the node's files and
//!   `SNAPSHOTS`, the manifest (pool, snapshot name, volumes).
//! - **restore** rolls each volume back to its snapshot in place (`rbd snap rollback`). Not
//!   clones: a clone would have a new name (so the database copy would have to be rewritten)
//!   and would hold its snapshot protected for as long as it lives; a rollback keeps the
//!   names the database copy knows and leaves no dependency. A volume deleted since the
//!   backup is gone with its snapshots (deleting a volume purges them: old backups never
//!   block a delete): restore names it, and `verify` then reports its row.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use serde::{Deserialize, Serialize};

use super::backup::{Copied, DATABASE, MANIFEST, NODE_FILES, empty_folder, refuse_live, sync_tree};
use crate::db::{Backend, Db};
use crate::storage::Storage;
use crate::storage::rbd::BACKUP_SNAPSHOT_PREFIX;

/// The manifest of the snapshots a backup took.
pub const SNAPSHOTS: &str = "SNAPSHOTS";
/// The PostgreSQL database of a backup, as `pg_dump --format=custom` writes it.
pub const PG_DUMP: &str = "extility.pgdump";

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    pool: String,
    snapshot: String,
    /// The images that have the snapshot.
    volumes: Vec<String>,
    /// Images the database copy names that were deleted before they could be snapshotted.
    missing: Vec<String>,
}

/// Backs up the node whose data directory is `data_dir` and whose volumes are the images of
/// `storage`'s pool into `dest`, while it may be serving. `database_url` is the database's
/// (for `pg_dump`).
pub async fn backup(
    db: &Db,
    database_url: &str,
    storage: Arc<dyn Storage>,
    data_dir: &Path,
    dest: &Path,
) -> anyhow::Result<Copied> {
    let pool = storage
        .pool()
        .context("snapshots are taken of RBD storage only")?
        .to_string();
    empty_folder(dest)?;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)?
        .as_millis();
    let snapshot = format!("{BACKUP_SNAPSHOT_PREFIX}{millis}");

    // Before the database copy: every image there is.
    let mut taken: BTreeSet<String> = {
        let (storage, snapshot) = (storage.clone(), snapshot.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<BTreeSet<String>> {
            let mut taken = BTreeSet::new();
            for file in storage.list_files()? {
                if storage.snapshot_volume(&file.name, &snapshot)? {
                    taken.insert(file.name);
                }
            }
            Ok(taken)
        })
        .await??
    };

    let named = copy_database(db, database_url, dest).await?;

    // After it: the volumes it names that were made in between.
    let (taken, missing) = {
        let (storage, snapshot) = (storage.clone(), snapshot.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mut missing = Vec::new();
            for file in named {
                if taken.contains(&file) {
                    continue;
                }
                if storage.snapshot_volume(&file, &snapshot)? {
                    taken.insert(file);
                } else {
                    missing.push(file);
                }
            }
            Ok((taken, missing))
        })
        .await??
    };

    for name in NODE_FILES {
        let file = data_dir.join(name);
        if file.exists() {
            fs::copy(&file, dest.join(name))?;
        }
    }
    let manifest = Manifest {
        pool: pool.clone(),
        snapshot: snapshot.clone(),
        volumes: taken.into_iter().collect(),
        missing: missing.clone(),
    };
    fs::write(dest.join(SNAPSHOTS), serde_json::to_vec_pretty(&manifest)?)?;
    fs::write(
        dest.join(MANIFEST),
        format!(
            "extility {} backup of {}, {} volumes as the snapshot {snapshot} of the RBD pool {pool}\n",
            env!("CARGO_PKG_VERSION"),
            data_dir.display(),
            manifest.volumes.len(),
        ),
    )?;
    sync_tree(dest)?;
    Ok(Copied {
        volumes: manifest.volumes.len(),
        bytes: 0,
        missing,
    })
}

/// Copies the database into `dest` in one transaction; returns the volume files the copy
/// names, read in the copy's own snapshot.
pub(super) async fn copy_database(
    db: &Db,
    database_url: &str,
    dest: &Path,
) -> anyhow::Result<Vec<String>> {
    match db.backend() {
        Backend::Sqlite => {
            let copy_path = dest.join(DATABASE);
            sqlx::query("VACUUM INTO $1")
                .bind(copy_path.display().to_string())
                .execute(db.pool())
                .await
                .context("copying the database (VACUUM INTO)")?;
            let copy = Db::connect(&format!("sqlite://{}?mode=ro", copy_path.display())).await?;
            let files = sqlx::query_scalar("SELECT file FROM volumes ORDER BY id")
                .fetch_all(copy.pool())
                .await?;
            copy.close().await;
            Ok(files)
        }
        Backend::Postgres => {
            // The volume list must be the dump's own: read after the dump, a volume deleted in
            // between would be in the dump but not copied. So this transaction exports its
            // snapshot, reads the list in it and stays open while pg_dump runs in the same
            // snapshot (`--snapshot`).
            let mut tx = db.pool().begin().await?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
            let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
                .fetch_one(&mut *tx)
                .await?;
            let files = sqlx::query_scalar("SELECT file FROM volumes ORDER BY id")
                .fetch_all(&mut *tx)
                .await?;
            let mut command = pg_command("pg_dump", database_url)?;
            command
                .args(["--format=custom", "--no-owner", "--snapshot"])
                .arg(&snapshot)
                .arg("--file")
                .arg(dest.join(PG_DUMP));
            let out = command
                .output()
                .await
                .context("running pg_dump (Debian package postgresql-client)")?;
            tx.rollback().await?;
            ensure!(
                out.status.success(),
                "pg_dump failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            Ok(files)
        }
    }
}

/// `tool` (`pg_dump`, `pg_restore`) on the database at `database_url`. The password goes to it
/// in its environment, never on its command line (which every local user can read).
pub(super) fn pg_command(
    tool: &str,
    database_url: &str,
) -> anyhow::Result<tokio::process::Command> {
    let mut url = url::Url::parse(database_url).context("the database URL")?;
    let password = url.password().map(str::to_string);
    let _ = url.set_password(None);
    let mut command = tokio::process::Command::new(tool);
    command.arg("--dbname").arg(url.as_str());
    if let Some(password) = password {
        let password = percent_encoding::percent_decode_str(&password)
            .decode_utf8_lossy()
            .into_owned();
        command.env("PGPASSWORD", password);
    }
    Ok(command)
}

/// Restores the RBD backup in `src`: rolls its volumes back to their snapshots in `storage`'s
/// pool and puts the database (SQLite) and the node's files into `data_dir`, which must hold no
/// database and serve no node. A PostgreSQL database is restored with `pg_restore`
/// (docs/src/operators/backups.md). Every node using the pool must be stopped.
pub fn restore(src: &Path, data_dir: &Path, storage: &dyn Storage) -> anyhow::Result<Copied> {
    ensure!(
        src.join(MANIFEST).exists() && src.join(SNAPSHOTS).exists(),
        "{} is not an extility backup of RBD volumes (it has no {MANIFEST} and {SNAPSHOTS})",
        src.display()
    );
    let manifest: Manifest = serde_json::from_slice(&fs::read(src.join(SNAPSHOTS))?)
        .with_context(|| format!("reading {}", src.join(SNAPSHOTS).display()))?;
    if storage.pool() != Some(manifest.pool.as_str()) {
        bail!(
            "the backup's volumes are in the RBD pool {}: restore with --storage rbd --rbd-pool {}",
            manifest.pool,
            manifest.pool
        );
    }
    refuse_live(data_dir)?;
    ensure!(
        !data_dir.join(DATABASE).exists(),
        "{} already has a database: restore into a new or empty data directory",
        data_dir.display()
    );
    fs::create_dir_all(data_dir)?;
    let mut copied = Copied {
        missing: manifest.missing.clone(),
        ..Copied::default()
    };
    for volume in &manifest.volumes {
        if storage
            .rollback_volume(volume, &manifest.snapshot)
            .with_context(|| format!("rolling {volume} back to {}", manifest.snapshot))?
        {
            copied.volumes += 1;
        } else {
            copied.missing.push(volume.clone());
        }
    }
    for name in NODE_FILES {
        let file = src.join(name);
        if file.exists() {
            fs::copy(&file, data_dir.join(name))?;
        }
    }
    // The database last: a data directory with a database is a restored one.
    if src.join(DATABASE).exists() {
        let staged = data_dir.join(format!("{DATABASE}.restoring"));
        fs::copy(src.join(DATABASE), &staged)?;
        File::open(&staged)?.sync_all()?;
        fs::rename(&staged, data_dir.join(DATABASE))?;
    }
    sync_tree(data_dir)?;
    Ok(copied)
}

/// Removes the snapshots the RBD backup in `src` took (its folder is then the caller's to
/// remove): what pruning an old backup does in the pool. Volumes or snapshots gone already
/// are skipped.
pub fn remove_snapshots(src: &Path, storage: &dyn Storage) -> anyhow::Result<usize> {
    let manifest: Manifest = serde_json::from_slice(&fs::read(src.join(SNAPSHOTS))?)
        .with_context(|| format!("reading {}", src.join(SNAPSHOTS).display()))?;
    if storage.pool() != Some(manifest.pool.as_str()) {
        bail!(
            "{} is a backup of the RBD pool {}: prune it with --storage rbd --rbd-pool {}",
            src.display(),
            manifest.pool,
            manifest.pool
        );
    }
    ensure!(
        manifest.snapshot.starts_with(BACKUP_SNAPSHOT_PREFIX),
        "{} names the snapshot {:?}, not a backup's",
        src.display(),
        manifest.snapshot
    );
    let mut removed = 0;
    for volume in &manifest.volumes {
        if storage
            .remove_volume_snapshot(volume, &manifest.snapshot)
            .with_context(|| format!("removing {volume}@{}", manifest.snapshot))?
        {
            removed += 1;
        }
    }
    Ok(removed)
}
