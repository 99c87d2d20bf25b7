//! Cutting other clients off an image (blocklisting its watchers), and removing staging images
//! whose writer is gone.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{RbdStorage, STAGING_PREFIX, UNWATCH_WAIT, is_not_found, same_client};
use crate::storage::{StorageError, StorageResult};

impl RbdStorage {
    /// Blocklists every client but this node's own that has the image open (a watch on it):
    /// each client instance has an address of its own, so only those are cut off, and for good
    /// (an hour on the cluster's list, by which time they have failed). What librbd itself
    /// does when it breaks a dead owner's lock. Returns how many there were; none for a
    /// missing image.
    pub(super) fn blocklist_watchers(&self, name: &str) -> StorageResult<usize> {
        let session = self.session()?;
        let watchers = match self.call(|s| s.pool.open_read_only(name)?.watchers()) {
            Ok(watchers) => watchers,
            Err(e) if is_not_found(&e) => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut fenced = 0;
        for address in &watchers {
            if same_client(address, &session.address) {
                // Never this node's own client, which every other call goes through.
                tracing::warn!(image = %name, "this node's own client has the image open");
                continue;
            }
            self.mon_command(json!({
                "prefix": "osd blocklist",
                "blocklistop": "add",
                "addr": address,
                "expire": 3600.0,
            }))?;
            fenced += 1;
        }
        if fenced > 0 {
            self.call(|s| s.pool.cluster().wait_for_latest_osdmap())?;
        }
        Ok(fenced)
    }

    /// Removes a staging image whose writer is gone (stopped when its job was cancelled, or
    /// dead with the attempt or the node that ran it): the watch a dead client leaves on an
    /// image holds its removal off for half a minute, so it is blocklisted first, and the
    /// removal waits for the OSDs to drop its watch.
    pub(super) fn remove_abandoned_staging(&self, name: &str) -> StorageResult<()> {
        debug_assert!(name.starts_with(STAGING_PREFIX));
        let fenced = self.blocklist_watchers(name)?;
        let deadline = Instant::now() + UNWATCH_WAIT;
        loop {
            match self.remove_image_if_present(name) {
                Err(StorageError::Tool(_))
                    if fenced > 0 && Instant::now() < deadline && self.has_watchers(name) =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    fn has_watchers(&self, name: &str) -> bool {
        self.call(|s| s.pool.open_read_only(name)?.watchers())
            .is_ok_and(|w| !w.is_empty())
    }
}
