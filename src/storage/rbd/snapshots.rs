//! The snapshots clones are made from, and deleting an image with its snapshots.

use super::{BACKUP_SNAPSHOT_PREFIX, RbdStorage, is_not_found};
use crate::storage::librbd;
use crate::storage::{StorageError, StorageResult};

impl RbdStorage {
    /// Deletes an image and its snapshots (backup snapshots too). Fails while a clone stands
    /// on it. A backup may snapshot the image between the purge and the removal: then the
    /// purge is done again.
    pub(super) fn delete_image(&self, name: &str) -> StorageResult<()> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.purge_and_remove(name) {
                Err(StorageError::Tool(_)) if attempts < 3 && self.has_backup_snapshot(name) => {
                    continue;
                }
                other => return other,
            }
        }
    }

    fn has_backup_snapshot(&self, name: &str) -> bool {
        self.call(|s| s.pool.open_read_only(name)?.snapshots())
            .map(|snapshots| {
                snapshots
                    .iter()
                    .any(|s| s.name.starts_with(BACKUP_SNAPSHOT_PREFIX))
            })
            .unwrap_or(false)
    }

    fn purge_and_remove(&self, name: &str) -> StorageResult<()> {
        let has_snapshots =
            match self.call(|s| Ok(!s.pool.open_read_only(name)?.snapshots()?.is_empty())) {
                Ok(has) => has,
                // No header to open: gone, or an image whose creation was cut short (an OSD
                // lost mid-create), still listed by its directory entry and id object.
                // rbd_remove removes what is left of such an image; it answers "not found"
                // only for one that is really gone.
                Err(e) if is_not_found(&e) => false,
                Err(e) => return Err(e),
            };
        if has_snapshots {
            self.call(|s| {
                let image = s.pool.open(name)?;
                for snapshot in image.snapshots()? {
                    if image.snap_is_protected(&snapshot.name)? {
                        image.snap_unprotect(&snapshot.name)?;
                    }
                    image.snap_remove(&snapshot.name)?;
                }
                Ok(())
            })?;
        }
        self.call(|s| s.pool.remove(name))
    }

    /// Takes and protects the snapshot `snapshot` of `image` (a volume of `size` bytes, which
    /// nothing writes) at `target` bytes, if it is not there yet: the head is grown to
    /// `target` for the snapshot (what it adds reads as zeros) and set back to `size` after.
    /// Nodes doing it at once for other sizes may catch each other's head: a snapshot of the
    /// wrong size is never protected, and is taken again.
    pub(super) fn clone_snapshot(
        &self,
        image: &str,
        snapshot: &str,
        size: u64,
        target: u64,
    ) -> StorageResult<()> {
        for _ in 0..5 {
            let taken = self.call(|s| {
                let image = s.pool.open(image)?;
                let found = image.snapshots()?.into_iter().find(|x| x.name == snapshot);
                let taken = match found {
                    Some(found) if found.size == target => true,
                    Some(_) if image.snap_is_protected(snapshot)? => {
                        return Err(librbd::Error::invalid(snapshot));
                    }
                    Some(_) => {
                        image.snap_remove(snapshot)?;
                        false
                    }
                    None => false,
                };
                let taken = taken || {
                    if image.size()? != target {
                        image.resize(target, true)?;
                    }
                    let created = match image.snap_create(snapshot) {
                        Err(e) if e.errno() != libc::EEXIST => Err(e),
                        _ => Ok(()),
                    };
                    if image.size()? != size {
                        image.resize(size, true)?;
                    }
                    created?;
                    image
                        .snapshots()?
                        .iter()
                        .any(|x| x.name == snapshot && x.size == target)
                };
                if taken {
                    match image.snap_protect(snapshot) {
                        // EBUSY: protected already.
                        Err(e) if e.errno() != libc::EBUSY => return Err(e),
                        _ => {}
                    }
                }
                Ok(taken)
            })?;
            if taken {
                return Ok(());
            }
        }
        Err(StorageError::Tool(format!(
            "could not take the snapshot {snapshot} of {image}: its size kept changing"
        )))
    }
}
