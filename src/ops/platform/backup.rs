//! Backups, restores and the check that a database and its volumes agree (`extility backup`,
//! `restore`, `verify`): what an operator runs before trusting the platform with data.
//!
//! - **backup** (file volumes, SQLite or PostgreSQL): an online, consistent copy while the node
//!   serves.
//!   Every volume file is first hard-linked into a holding folder beside the volumes (instant;
//!   while the folder exists, file storage links a volume it deletes into it first, so every
//!   volume file that exists during the backup keeps its bytes there), then the database is
//!   copied with SQLite's `VACUUM INTO` or PostgreSQL's `pg_dump` (one transaction: a
//!   consistent snapshot), then each volume the copied database names is copied sparsely into
//!   the backup. Volumes made after the snapshot
//!   are not in it, as the database copy does not name them. A disk that a running VM writes is
//!   copied as a power cut would leave it (crash-consistent); stop its server for more.
//! - **restore**: into a data directory with no database and no live node, the database, the
//!   volumes (sparse), the node id and the secret key (which seals queued jobs' credentials);
//!   a PostgreSQL backup's dump into a new, empty database (`pg_restore`, [`restore_postgres`]).
//! - **verify**: every volume row has its file or RBD image, every disk, image and snapshot
//!   row its volume, every overlay its backing volume, and every stored volume a row. It
//!   reports and never deletes (the orphan sweep is what deletes, after an hour).
//!
//! On PostgreSQL the database is copied with `pg_dump` (docs/src/operators/backups.md).
//! Volumes on RBD are kept as snapshots in their pool: [`super::rbd_backup`].

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};

use crate::db::{Backend, Db};
use crate::jobs::identity::NodeLock;
use crate::sparse::{SparseWriter, copy_extents_while};
use crate::storage::Storage;
use crate::storage::files::BACKUP_HOLD_PREFIX;

/// What a backup holds besides the volumes: the database and the node's own files.
pub(super) const DATABASE: &str = "extility.db";
pub(super) const NODE_FILES: &[&str] = &["node-id", "secret.key"];
pub(super) const MANIFEST: &str = "BACKUP";

/// What a backup or restore copied.
#[derive(Debug, Default)]
pub struct Copied {
    pub volumes: usize,
    /// Bytes of data copied (holes are not counted).
    pub bytes: u64,
    /// Volumes the database names that could not be kept or restored (on RBD: deleted, with
    /// their backup snapshots, since the backup; `verify` reports their rows).
    pub missing: Vec<String>,
}

/// Copies the database and volumes of the node whose data directory is `data_dir` into
/// `dest` (a new or empty folder), while it may be serving. `database_url` is the database's
/// (for `pg_dump` on PostgreSQL).
pub async fn backup(
    db: &Db,
    database_url: &str,
    data_dir: &Path,
    dest: &Path,
) -> anyhow::Result<Copied> {
    let volumes = data_dir.join("volumes");
    ensure!(
        volumes.is_dir(),
        "{} has no volumes folder: is --data-dir right (and the storage files)?",
        data_dir.display()
    );
    empty_folder(dest)?;
    fs::create_dir_all(dest.join("volumes"))?;

    let id = uuid::Uuid::new_v4().simple();
    let hold = data_dir.join(format!("{BACKUP_HOLD_PREFIX}{id}"));
    let held = {
        let (data_dir, volumes, hold) = (data_dir.to_path_buf(), volumes.clone(), hold.clone());
        tokio::task::spawn_blocking(move || {
            remove_stale_holds(&data_dir);
            hold_volumes(&volumes, &hold)
        })
        .await?
    };
    // Locked for as long as this backup runs: its hold is not stale.
    let (hold_lock, held) = match held {
        Ok(lock) => (Some(lock), Ok(())),
        Err(err) => (None, Err(err)),
    };
    let outcome = async {
        held?;
        // SQLite: `VACUUM INTO`; PostgreSQL: `pg_dump`. Each is one transaction.
        let files = super::rbd_backup::copy_database(db, database_url, dest).await?;
        // File copies block: off the async runtime.
        let (data_dir, dest, volumes, hold) = (
            data_dir.to_path_buf(),
            dest.to_path_buf(),
            volumes.clone(),
            hold.clone(),
        );
        tokio::task::spawn_blocking(move || copy_volumes(&files, &volumes, &hold, &data_dir, &dest))
            .await?
    }
    .await;
    // A folder of one link per volume: removed off the async runtime.
    let (data_dir, id) = (data_dir.to_path_buf(), id.to_string());
    let _ = tokio::task::spawn_blocking(move || release_hold(&data_dir, &hold, &id)).await;
    drop(hold_lock);
    outcome
}

/// Copies the volumes `files` (from the holding folder where they are held) and the node's
/// files into the backup `dest`, then its manifest, and makes them durable.
fn copy_volumes(
    files: &[String],
    volumes: &Path,
    hold: &Path,
    data_dir: &Path,
    dest: &Path,
) -> anyhow::Result<Copied> {
    let mut copied = Copied::default();
    for name in files {
        plain_name(name)?;
        let held = hold.join(name);
        let source = if held.exists() {
            held
        } else {
            volumes.join(name)
        };
        if !source.exists() {
            // Made after the hold and deleted since the copy: the restored database names it,
            // and `verify` reports its row.
            copied.missing.push(name.clone());
            continue;
        }
        copied.bytes += sparse_copy(&source, &dest.join("volumes").join(name))
            .with_context(|| format!("copying volume {name}"))?;
        copied.volumes += 1;
    }
    for name in NODE_FILES {
        let file = data_dir.join(name);
        if file.exists() {
            fs::copy(&file, dest.join(name))?;
        }
    }
    fs::write(
        dest.join(MANIFEST),
        format!(
            "extility {} backup of {}, {} volumes\n",
            env!("CARGO_PKG_VERSION"),
            data_dir.display(),
            copied.volumes
        ),
    )?;
    sync_tree(dest)?;
    Ok(copied)
}

/// The lock file inside a holding folder, locked (`flock`) by its backup while it runs.
const HOLD_LOCK: &str = ".lock";

/// Hard links of every volume file, so that none of them vanishes while the backup copies it,
/// in the holding folder `hold`; returns the folder's lock, to keep while the backup runs.
/// The folder is made and locked under another name and then renamed, so that no holding
/// folder is ever seen unlocked while its backup lives ([`remove_stale_holds`]).
fn hold_volumes(volumes: &Path, hold: &Path) -> anyhow::Result<File> {
    let name = hold.file_name().unwrap_or_default().to_string_lossy();
    let making = hold.with_file_name(name.replacen(BACKUP_HOLD_PREFIX, HOLD_MAKING_PREFIX, 1));
    fs::create_dir(&making)?;
    let lock = File::create(making.join(HOLD_LOCK))?;
    lock.lock()?;
    fs::rename(&making, hold)?;
    for entry in fs::read_dir(volumes)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            // A file deleted since the listing began is simply not held.
            let _ = fs::hard_link(entry.path(), hold.join(entry.file_name()));
        }
    }
    Ok(lock)
}

/// A holding folder being made (not yet locked, or locked and about to be renamed).
const HOLD_MAKING_PREFIX: &str = "backup-making-";
/// A holding folder being removed.
const HOLD_RELEASED_PREFIX: &str = "backup-released-";

/// Removes what backups that died (`kill -9`, a crash) left beside the volumes: holding
/// folders whose lock nobody holds, and folders of theirs half made or half removed. A
/// running backup's folder is locked, and kept. Returns how many folders went.
pub fn remove_stale_holds(data_dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(data_dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = [BACKUP_HOLD_PREFIX, HOLD_MAKING_PREFIX, HOLD_RELEASED_PREFIX]
            .iter()
            .find_map(|prefix| name.strip_prefix(prefix))
        else {
            continue;
        };
        let folder = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        // A folder still made or removed by a live backup has its lock taken, as has a live
        // backup's hold; one without a lock file was never locked or is being removed.
        let lock = File::open(folder.join(HOLD_LOCK));
        if let Ok(lock) = &lock
            && lock.try_lock().is_err()
        {
            continue;
        }
        if name.starts_with(HOLD_MAKING_PREFIX) && lock.is_err() {
            // Made a moment ago, its lock file not yet made: left for the next sweep, unless old.
            let young = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() < 3600));
            if young {
                continue;
            }
        }
        let gone = if name.starts_with(HOLD_RELEASED_PREFIX) {
            fs::remove_dir_all(&folder).is_ok()
        } else {
            release_hold(data_dir, &folder, id)
        };
        if gone {
            tracing::info!(folder = %folder.display(), "removed a holding folder a backup left");
            removed += 1;
        }
    }
    removed
}

/// Removes the holding folder `hold` of the backup `id`; returns whether it went. Renamed
/// first, so that no deletion of a volume links into it any more while it is removed.
fn release_hold(data_dir: &Path, hold: &Path, id: &str) -> bool {
    let released = data_dir.join(format!("{HOLD_RELEASED_PREFIX}{id}"));
    let target = if fs::rename(hold, &released).is_ok() {
        released
    } else {
        hold.to_path_buf()
    };
    fs::remove_dir_all(&target).is_ok()
}

/// Restores the backup in `src` into `data_dir`, which must hold no database and serve no
/// node. A PostgreSQL backup's database is restored apart ([`restore_postgres`]), after this.
pub fn restore(src: &Path, data_dir: &Path) -> anyhow::Result<Copied> {
    ensure!(
        src.join(MANIFEST).exists()
            && (src.join(DATABASE).exists() || src.join(super::rbd_backup::PG_DUMP).exists()),
        "{} is not an extility backup (it has no {MANIFEST}, and no {DATABASE} or {})",
        src.display(),
        super::rbd_backup::PG_DUMP
    );
    ensure!(
        !src.join(super::rbd_backup::SNAPSHOTS).exists(),
        "{} is a backup of RBD volumes: restore it with --storage rbd and its pool",
        src.display()
    );
    refuse_live(data_dir)?;
    ensure!(
        !data_dir.join(DATABASE).exists(),
        "{} already has a database: restore into a new or empty data directory",
        data_dir.display()
    );
    let volumes = data_dir.join("volumes");
    fs::create_dir_all(&volumes)?;
    let mut copied = Copied::default();
    for entry in fs::read_dir(src.join("volumes"))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        plain_name(&name)?;
        copied.bytes += sparse_copy(&entry.path(), &volumes.join(&name))?;
        copied.volumes += 1;
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

/// Restores a backup's PostgreSQL database (`extility.pgdump`) into the database `db` at
/// `database_url`, which must be empty (no table): `pg_restore`, in one transaction.
pub async fn restore_postgres(src: &Path, db: &Db, database_url: &str) -> anyhow::Result<()> {
    postgres_restorable(src, db).await?;
    let dump = src.join(super::rbd_backup::PG_DUMP);
    let mut command = super::rbd_backup::pg_command("pg_restore", database_url)?;
    command
        .args(["--no-owner", "--exit-on-error", "--single-transaction"])
        .arg(&dump);
    let out = command
        .output()
        .await
        .context("running pg_restore (Debian package postgresql-client)")?;
    ensure!(
        out.status.success(),
        "pg_restore failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Whether the backup in `src` holds a PostgreSQL database that can be restored into `db`: a
/// PostgreSQL database with no table. Checked before anything is restored.
pub async fn postgres_restorable(src: &Path, db: &Db) -> anyhow::Result<()> {
    let dump = src.join(super::rbd_backup::PG_DUMP);
    ensure!(
        dump.exists(),
        "{} holds no PostgreSQL database ({}): it is a SQLite backup, which restores into the \
         data directory without --database-url",
        src.display(),
        super::rbd_backup::PG_DUMP
    );
    ensure!(
        db.backend() == Backend::Postgres,
        "{} is a PostgreSQL backup: give --database-url postgres://... of an empty database",
        src.display()
    );
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_one(db.pool())
    .await?;
    ensure!(
        tables == 0,
        "the database to restore into has {tables} tables: restore into a new, empty database"
    );
    Ok(())
}

/// Refuses a data directory a node is serving from (one of its node locks is held).
pub(super) fn refuse_live(data_dir: &Path) -> anyhow::Result<()> {
    let Ok(locks) = fs::read_dir(data_dir.join("locks")) else {
        return Ok(());
    };
    for entry in locks.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(node) = name.strip_suffix(".lock") {
            NodeLock::take(data_dir, node, "extility restore").with_context(|| {
                format!(
                    "{} is live: stop its server before restoring",
                    data_dir.display()
                )
            })?;
        }
    }
    Ok(())
}

/// A backup goes into a folder of its own: new, or empty.
pub(super) fn empty_folder(dest: &Path) -> anyhow::Result<()> {
    match fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!("{} is not empty: back up into a new folder", dest.display());
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(fs::create_dir_all(dest)?),
        Err(e) => Err(e.into()),
    }
}

/// A volume's file name: one path component (a database that says otherwise is refused).
fn plain_name(name: &str) -> anyhow::Result<()> {
    ensure!(
        Path::new(name).file_name() == Some(name.as_ref()) && name != "..",
        "{name:?} is not a volume file's name"
    );
    Ok(())
}

/// Copies `src` into a new file `dest`, its data only (holes stay holes); returns the bytes
/// of data copied.
fn sparse_copy(src: &Path, dest: &Path) -> anyhow::Result<u64> {
    let input = File::open(src)?;
    let len = input.metadata()?.len();
    let out = OpenOptions::new().write(true).create_new(true).open(dest)?;
    out.set_len(len)?;
    let mut writer = SparseWriter::new(out);
    let mut buf = vec![0u8; 1 << 20];
    copy_extents_while(&input, len, &mut writer, 0, &mut buf, &mut |_| true)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let (file, stats) = writer.finish()?;
    file.sync_all()?;
    Ok(stats.bytes_written)
}

/// Syncs a folder and the folders in it, so that the names of the files in them are durable.
pub(super) fn sync_tree(dir: &Path) -> anyhow::Result<()> {
    let mut folders: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in fs::read_dir(&folder)?.flatten() {
            if entry.file_type()?.is_dir() {
                folders.push(entry.path());
            }
        }
        File::open(&folder)?.sync_all()?;
    }
    Ok(())
}

/// One disagreement between the database and the volume store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding(pub String);

/// Checks that the database and the volume store agree; returns what does not.
pub async fn verify(db: &Db, storage: &dyn Storage) -> anyhow::Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let stored: HashSet<String> = storage.list_files()?.into_iter().map(|f| f.name).collect();
    let rows: Vec<(i64, String, Option<i64>)> =
        sqlx::query_as("SELECT id, file, backing_volume_id FROM volumes ORDER BY id")
            .fetch_all(db.pool())
            .await?;
    let ids: HashSet<i64> = rows.iter().map(|(id, _, _)| *id).collect();
    let named: HashSet<&str> = rows.iter().map(|(_, file, _)| file.as_str()).collect();
    for (id, file, backing) in &rows {
        if !stored.contains(file) {
            findings.push(Finding(format!("volume {id}: its file {file} is missing")));
        }
        if let Some(backing) = backing.filter(|b| !ids.contains(b)) {
            findings.push(Finding(format!(
                "volume {id}: its backing volume {backing} has no row"
            )));
        }
    }
    for (table, kind, extra) in [
        ("disks", "disk", ""),
        ("images", "image", " AND deleted IS NULL"),
        ("snapshots", "snapshot", ""),
    ] {
        // (`table` and `extra` are the crate's own words, never input.)
        let sql = format!(
            "SELECT t.id, t.volume_id FROM {table} t WHERE t.volume_id IS NOT NULL{extra} \
             AND NOT EXISTS (SELECT 1 FROM volumes v WHERE v.id = t.volume_id) ORDER BY t.id"
        );
        let missing: Vec<(i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(db.pool())
            .await?;
        for (id, volume) in missing {
            findings.push(Finding(format!(
                "{kind} {id}: its volume {volume} has no row"
            )));
        }
    }
    let mut unrecorded: Vec<&String> = stored
        .iter()
        .filter(|f| !named.contains(f.as_str()))
        .collect();
    unrecorded.sort();
    for file in unrecorded {
        findings.push(Finding(format!(
            "stored volume {file} has no row (the orphan sweep deletes it once it is an hour old)"
        )));
    }
    Ok(findings)
}
