//! One process per node id. Two `extility serve` processes under one node id would share one
//! node's leases in the job queue and one node's VMs, each taking the other's work for its
//! own: the second is refused, naming the first.
//!
//! - On one host, a lock file per node id in the data directory (`<data-dir>/locks/<id>.lock`,
//!   an exclusive `flock` held while the process lives, released by the kernel when it dies).
//!   It is per node id, not per directory: nodes with ids of their own may share a data
//!   directory (as on NFS: docs/src/operators/scaling.md).
//! - Across hosts sharing a database, the node's heartbeat (`nodes.last_seen`, renewed every
//!   [`ALIVE_EVERY`]): a start under an id whose heartbeat is fresh watches it until it is
//!   three periods old. A heartbeat that moves belongs to a live process (refused); one that
//!   stays put was a process that just died. Each start has a random instance id, kept in the
//!   lock file and in `nodes.instance`: when the fresh heartbeat is that of the instance whose
//!   lock this start just inherited (a restart after a crash), it is known dead and nothing
//!   is watched.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::db::{Db, now_ms};
use crate::error::ApiResult;

/// How often a serving node renews its heartbeat.
pub const ALIVE_EVERY: Duration = Duration::from_secs(2);

/// The lock of one node id on this host, held until dropped.
#[derive(Debug)]
pub struct NodeLock {
    _file: File,
    /// This start's instance id.
    pub instance: String,
    /// The instance id of the process that held the lock before, if any.
    pub previous_instance: Option<String>,
}

impl NodeLock {
    /// Takes the node id's lock in `data_dir`, writing a new instance id and `holder` (who
    /// takes it: pid and address) into it; or says who holds it.
    pub fn take(data_dir: &Path, node_id: &str, holder: &str) -> anyhow::Result<NodeLock> {
        let dir = data_dir.join("locks");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.lock", file_name(node_id)));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let held_by = text.lines().nth(1).unwrap_or_default().trim();
                anyhow::bail!(
                    "node {node_id} is already served from {} by another extility process ({}): \
                     stop it first, or give this one another --data-dir or --node-id",
                    data_dir.display(),
                    if held_by.is_empty() {
                        "starting"
                    } else {
                        held_by
                    }
                );
            }
            Err(std::fs::TryLockError::Error(err)) => {
                return Err(anyhow::Error::new(err)
                    .context(format!("locking {} (one process per node)", path.display())));
            }
        }
        let mut before = String::new();
        let _ = file.read_to_string(&mut before);
        let previous_instance = before
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("instance "))
            .map(|i| i.trim().to_string());
        let instance = uuid::Uuid::new_v4().to_string();
        file.set_len(0)?;
        use std::io::{Seek, SeekFrom};
        file.seek(SeekFrom::Start(0))?;
        writeln!(file, "instance {instance}\n{holder}")?;
        file.sync_all()?;
        Ok(NodeLock {
            _file: file,
            instance,
            previous_instance,
        })
    }
}

/// A node id as a file name: its letters, digits, `-`, `_` and `.`, others as `_`.
fn file_name(node_id: &str) -> String {
    node_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A node's heartbeat as `nodes` has it.
struct Heartbeat {
    last_seen: i64,
    address: Option<String>,
    instance: Option<String>,
}

async fn heartbeat(db: &Db, node_id: &str) -> ApiResult<Option<Heartbeat>> {
    let row: Option<(i64, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT last_seen, address, instance FROM nodes WHERE id = $1")
            .bind(node_id)
            .fetch_optional(db.pool())
            .await?;
    Ok(row.map(|(last_seen, address, instance)| Heartbeat {
        last_seen,
        address,
        instance,
    }))
}

/// Refuses to go on while another live process serves `node_id` on this database.
pub async fn ensure_not_served_elsewhere(
    db: &Db,
    node_id: &str,
    lock: &NodeLock,
) -> anyhow::Result<()> {
    let window = (ALIVE_EVERY * 3).as_millis() as i64;
    let Some(first) = heartbeat(db, node_id).await? else {
        return Ok(());
    };
    let predecessor = first.instance.is_some() && first.instance == lock.previous_instance;
    if predecessor || now_ms() - first.last_seen > window {
        return Ok(());
    }
    tracing::info!(
        node = node_id,
        "this node id's heartbeat is fresh: checking that no other process still serves it"
    );
    // Watch until the heartbeat either moves (a live holder) or has not moved for a whole
    // window (its holder is gone).
    while now_ms() - first.last_seen <= window {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(now) = heartbeat(db, node_id).await? else {
            return Ok(());
        };
        if now.last_seen != first.last_seen {
            anyhow::bail!(
                "node {node_id} is served by another live process on this database (its \
                 heartbeat moved {} ms ago; it listens at {}): stop it first, or give this one \
                 another --node-id",
                (now_ms() - now.last_seen).max(0),
                now.address.as_deref().unwrap_or("an unknown address")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_of_one_node_id_names_the_first_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first =
            NodeLock::take(dir.path(), "node-a", "pid 41 listening on 127.0.0.1:1").unwrap();
        assert_eq!(first.previous_instance, None);
        let err = NodeLock::take(dir.path(), "node-a", "pid 42")
            .unwrap_err()
            .to_string();
        assert!(err.contains("pid 41 listening on 127.0.0.1:1"), "{err}");
        // Another node id may share the directory.
        let _other = NodeLock::take(dir.path(), "node-b", "pid 43").unwrap();
        let first_instance = first.instance.clone();
        drop(first);
        let next = NodeLock::take(dir.path(), "node-a", "pid 44").unwrap();
        assert_eq!(next.previous_instance, Some(first_instance));
        assert_ne!(next.instance, next.previous_instance.clone().unwrap());
    }

    #[test]
    fn node_ids_make_safe_file_names() {
        assert_eq!(file_name("node-1.a_b"), "node-1.a_b");
        assert_eq!(file_name("../x/y"), ".._x_y");
    }
}
