//! An open image: its size, snapshots, watchers and data.

use std::ffi::{CStr, c_char, c_int, c_void};

use super::ffi::{Api, ImageT, SnapInfo, WatcherInfo};
use super::{Cluster, Error, Result, c, check};

/// A snapshot of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    pub size: u64,
}

/// An open image; closed when dropped.
pub struct Image {
    pub(super) image: ImageT,
    pub(super) name: String,
    pub(super) cluster: Cluster,
}

// SAFETY: librbd image handles may be used from any thread (ImageCtx locks internally); the
// handle is used by one owner at a time here.
unsafe impl Send for Image {}

impl Drop for Image {
    fn drop(&mut self) {
        // SAFETY: opened by rbd_open; no I/O is in flight (a Writer waits for its own).
        unsafe { (self.api().rbd_close)(self.image) };
    }
}

unsafe extern "C" fn no_progress(_: u64, _: u64, _: *mut c_void) -> c_int {
    0
}

unsafe extern "C" fn collect_extent(
    offset: u64,
    len: usize,
    exists: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: `arg` is the Vec diff_iterate passed, alive for the call.
    let extents = unsafe { &mut *(arg as *mut Vec<(u64, u64)>) };
    if exists != 0 {
        match extents.last_mut() {
            Some((start, end)) if *end == offset => *end = offset + len as u64,
            _ => extents.push((offset, offset + len as u64)),
        }
    }
    0
}

impl Image {
    pub(super) fn api(&self) -> &'static Api {
        self.cluster.api()
    }

    pub fn size(&self) -> Result<u64> {
        let mut size = 0u64;
        // SAFETY: open image, out pointer to a local.
        let ret = unsafe { (self.api().rbd_get_size)(self.image, &mut size) };
        check("rbd_get_size", &self.name, ret)?;
        Ok(size)
    }

    /// Sets the size; shrinking (what lies past the new end is lost) only with `allow_shrink`.
    pub fn resize(&self, size: u64, allow_shrink: bool) -> Result<()> {
        // SAFETY: open image; the progress callback ignores its arguments.
        let ret = unsafe {
            (self.api().rbd_resize2)(
                self.image,
                size,
                allow_shrink,
                no_progress,
                std::ptr::null_mut(),
            )
        };
        check("rbd_resize", &self.name, ret)
    }

    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        // librbd wants room for one more entry than there are snapshots (a terminator).
        let mut capacity: c_int = 16;
        loop {
            let mut snaps: Vec<SnapInfo> = Vec::with_capacity(capacity as usize);
            let mut max = capacity;
            // SAFETY: room for `max` entries; on success librbd filled `ret` of them and a
            // terminator, whose names rbd_snap_list_end frees.
            let ret =
                unsafe { (self.api().rbd_snap_list)(self.image, snaps.as_mut_ptr(), &mut max) };
            if ret == -libc::ERANGE {
                capacity = max.max(capacity * 2);
                continue;
            }
            check("rbd_snap_list", &self.name, ret)?;
            unsafe { snaps.set_len(ret as usize) };
            let list = snaps
                .iter()
                .map(|s| Snapshot {
                    name: unsafe { CStr::from_ptr(s.name) }
                        .to_string_lossy()
                        .into_owned(),
                    size: s.size,
                })
                .collect();
            unsafe { (self.api().rbd_snap_list_end)(snaps.as_mut_ptr()) };
            return Ok(list);
        }
    }

    pub fn snap_is_protected(&self, snapshot: &str) -> Result<bool> {
        let mut protected: c_int = 0;
        // SAFETY: open image, C string, out pointer to a local.
        let ret = unsafe {
            (self.api().rbd_snap_is_protected)(self.image, c(snapshot).as_ptr(), &mut protected)
        };
        check("rbd_snap_is_protected", snapshot, ret)?;
        Ok(protected != 0)
    }

    fn snap_call(
        &self,
        call: &'static str,
        f: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
        snapshot: &str,
    ) -> Result<()> {
        // SAFETY: open image, C string.
        let ret = unsafe { f(self.image, c(snapshot).as_ptr()) };
        check(call, &format!("{}@{snapshot}", self.name), ret)
    }

    pub fn snap_create(&self, snapshot: &str) -> Result<()> {
        self.snap_call("rbd_snap_create", self.api().rbd_snap_create, snapshot)
    }

    pub fn snap_remove(&self, snapshot: &str) -> Result<()> {
        self.snap_call("rbd_snap_remove", self.api().rbd_snap_remove, snapshot)
    }

    pub fn snap_protect(&self, snapshot: &str) -> Result<()> {
        self.snap_call("rbd_snap_protect", self.api().rbd_snap_protect, snapshot)
    }

    pub fn snap_unprotect(&self, snapshot: &str) -> Result<()> {
        self.snap_call(
            "rbd_snap_unprotect",
            self.api().rbd_snap_unprotect,
            snapshot,
        )
    }

    pub fn snap_rollback(&self, snapshot: &str) -> Result<()> {
        self.snap_call("rbd_snap_rollback", self.api().rbd_snap_rollback, snapshot)
    }

    /// The addresses of the clients that have the image open (watch it).
    pub fn watchers(&self) -> Result<Vec<String>> {
        let mut capacity = 8usize;
        loop {
            let mut list: Vec<WatcherInfo> = Vec::with_capacity(capacity);
            let mut count = capacity;
            // SAFETY: room for `count` entries; on success librbd filled `count`, whose
            // strings rbd_watchers_list_cleanup frees.
            let ret = unsafe {
                (self.api().rbd_watchers_list)(self.image, list.as_mut_ptr(), &mut count)
            };
            if ret == -libc::ERANGE {
                capacity = count.max(capacity * 2);
                continue;
            }
            check("rbd_watchers_list", &self.name, ret)?;
            unsafe { list.set_len(count) };
            let addresses = list
                .iter()
                .map(|w| {
                    unsafe { CStr::from_ptr(w.addr) }
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            unsafe { (self.api().rbd_watchers_list_cleanup)(list.as_mut_ptr(), count) };
            return Ok(addresses);
        }
    }

    /// The ranges of the image that hold data (`include_parent`: or its parent's, read
    /// through), in whole objects, in order and merged; what lies outside reads as zeros.
    pub fn allocated_extents(&self, include_parent: bool) -> Result<Vec<(u64, u64)>> {
        let size = self.size()?;
        let mut extents: Vec<(u64, u64)> = Vec::new();
        // SAFETY: open image, no starting snapshot; the callback gets the Vec, alive for the
        // call, and only pushes to it.
        let ret = unsafe {
            (self.api().rbd_diff_iterate2)(
                self.image,
                std::ptr::null(),
                0,
                size,
                include_parent as u8,
                1,
                collect_extent,
                &mut extents as *mut Vec<(u64, u64)> as *mut c_void,
            )
        };
        check("rbd_diff_iterate2", &self.name, ret)?;
        Ok(extents)
    }

    /// Reads into `buf` from `offset`; short only at the end of the image.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let want = (buf.len() - done).min(1 << 30);
            // SAFETY: open image; `want` bytes of room at the pointer.
            let ret = unsafe {
                (self.api().rbd_read)(
                    self.image,
                    offset + done as u64,
                    want,
                    buf[done..].as_mut_ptr() as *mut c_char,
                )
            };
            if ret < 0 {
                return Err(Error::new("rbd_read", &self.name, ret as i64));
            }
            if ret == 0 {
                break;
            }
            done += ret as usize;
        }
        Ok(done)
    }

    /// Makes `len` bytes at `offset` read as zeros.
    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        // SAFETY: open image.
        let ret = unsafe { (self.api().rbd_write_zeroes)(self.image, offset, len as usize, 0, 0) };
        if ret < 0 {
            return Err(Error::new("rbd_write_zeroes", &self.name, ret as i64));
        }
        Ok(())
    }

    /// Waits until everything written is durable.
    pub fn flush(&self) -> Result<()> {
        // SAFETY: open image.
        let ret = unsafe { (self.api().rbd_flush)(self.image) };
        check("rbd_flush", &self.name, ret)
    }
}
