//! The orphan sweep: deletes files of the volume store that no `volumes` row names.
//!
//! Such files are left when a node dies between making a volume's file and committing the row
//! that names it (a staged copy just moved into place, a blank disk just created), or when
//! deleting a released volume's file failed. Every few minutes (and once at start) each node
//! lists its volume store and deletes the unnamed files that have not been modified for an
//! hour: a younger file may be one that another operation, or another node sharing the store,
//! is still making and has not recorded yet.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::{Storage, StoredFile};
use crate::db::Db;
use crate::error::ApiResult;

/// The files to delete: those `named` does not hold whose last change is at least `min_age`
/// before `now`. A file changed "in the future" (a clock step) counts as young.
pub fn select(
    files: &[StoredFile],
    named: &HashSet<String>,
    now: SystemTime,
    min_age: Duration,
) -> Vec<String> {
    files
        .iter()
        .filter(|f| !named.contains(&f.name))
        .filter(|f| {
            now.duration_since(f.modified)
                .is_ok_and(|age| age >= min_age)
        })
        .map(|f| f.name.clone())
        .collect()
}

/// One sweep: returns the names of the files it deleted.
pub async fn sweep(
    db: &Db,
    storage: Arc<dyn Storage>,
    min_age: Duration,
) -> ApiResult<Vec<String>> {
    // The files are listed before the rows are read: a file made and recorded in between is
    // young, and one recorded before the listing is in the rows.
    let lister = storage.clone();
    let files = tokio::task::spawn_blocking(move || lister.list_files()).await??;
    let now = SystemTime::now();
    if select(&files, &HashSet::new(), now, min_age).is_empty() {
        return Ok(Vec::new()); // nothing old enough to ask the database about
    }
    let named: HashSet<String> = sqlx::query_scalar("SELECT file FROM volumes")
        .fetch_all(db.pool())
        .await?
        .into_iter()
        .collect();
    let orphans = select(&files, &named, now, min_age);
    if orphans.is_empty() {
        return Ok(orphans);
    }
    let deleted = tokio::task::spawn_blocking(move || {
        let mut deleted = Vec::new();
        for name in orphans {
            match storage.delete_file(&name) {
                Ok(()) => deleted.push(name),
                Err(err) => {
                    tracing::warn!(file = %name, error = %err, "could not delete an orphan volume file")
                }
            }
        }
        deleted
    })
    .await?;
    Ok(deleted)
}

/// Sweeps at start and then every `every`, until `stop`.
pub async fn run(
    db: Db,
    storage: Arc<dyn Storage>,
    every: Duration,
    min_age: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        match sweep(&db, storage.clone(), min_age).await {
            Ok(deleted) => {
                for file in deleted {
                    tracing::info!(
                        file = %file,
                        min_age_seconds = min_age.as_secs(),
                        "deleted a volume file that no volume refers to"
                    );
                }
            }
            Err(err) => tracing::warn!(error = %err, "sweeping orphan volume files failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn file(name: &str, age: Duration, now: SystemTime) -> StoredFile {
        StoredFile {
            name: name.to_string(),
            modified: now - age,
        }
    }

    #[test]
    fn only_old_files_no_row_names_are_selected() {
        let now = SystemTime::now();
        let files = vec![
            file("old-orphan.raw", 2 * HOUR, now),
            file("just-old-enough.qcow2", HOUR, now),
            file("young-orphan.raw", HOUR - Duration::from_secs(1), now),
            file("old-volume.raw", 48 * HOUR, now),
            file("young-volume.qcow2", Duration::ZERO, now),
            StoredFile {
                name: "from-the-future.raw".into(),
                modified: now + HOUR,
            },
        ];
        let named: HashSet<String> = ["old-volume.raw", "young-volume.qcow2", "gone.raw"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(
            select(&files, &named, now, HOUR),
            vec!["old-orphan.raw", "just-old-enough.qcow2"]
        );
        assert!(select(&files, &named, now, 3 * HOUR).is_empty());
        assert!(select(&[], &named, now, HOUR).is_empty());
    }
}
