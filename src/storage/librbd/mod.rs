//! librados and librbd in process: the few calls of Ceph's C API the RBD storage makes, behind
//! a safe interface. Every `unsafe` of the RBD storage is in this module.
//!
//! The libraries are loaded when RBD storage is first opened (`dlopen` of `librbd.so.1`, which
//! brings `librados.so.2`): the binary builds without Ceph's development packages and runs
//! without Ceph at all, and only `--storage rbd` needs Debian's `librbd1` (which `ceph-common`,
//! needed anyway, depends on). The declarations ([`ffi`]) are those of `rbd/librbd.h` and
//! `rados/librados.h`, whose C API Ceph keeps stable across releases (checked against 16.2).
//!
//! - [`Cluster`]: a client of the cluster (`rados_t`, thread-safe), with monitor commands.
//! - [`Pool`]: an I/O context on a pool (`rados_ioctx_t`): listing, creating, cloning,
//!   renaming and removing images, and opening them. Clones of the images the storage makes
//!   are written object by object ([`clone`], with [`cls`] and [`objects`]): librbd's own
//!   clone costs ten times the CPU.
//! - [`Image`]: an open image (`rbd_image_t`): size, snapshots, watchers, reads, and
//!   [`Writer`], writes with a few in flight.
//!
//! Each handle keeps what it was made from alive (an image its cluster), so nothing is closed
//! under another. All calls block: callers run them off the async runtime.

mod clone;
mod cls;
mod cluster;
mod ffi;
mod image;
mod objects;
mod writer;

use std::ffi::{CString, c_int};
use std::fmt;
use std::io;

pub use cluster::{Cluster, Connect, Pool};
pub use image::Image;
pub use writer::Writer;

/// A failed call: which, on what, and the error number Ceph returned (or why the libraries are
/// missing).
#[derive(Debug)]
pub struct Error {
    call: &'static str,
    what: String,
    errno: i32,
    detail: String,
}

impl Error {
    fn new(call: &'static str, what: &str, ret: i64) -> Error {
        Error {
            call,
            what: what.to_string(),
            errno: (-ret) as i32,
            detail: String::new(),
        }
    }

    /// `EINVAL` for `what`: an argument the caller found wrong.
    pub fn invalid(what: &str) -> Error {
        Error::new("invalid", what, -i64::from(libc::EINVAL))
    }

    fn unavailable(why: String) -> Error {
        Error {
            call: "dlopen",
            what: String::new(),
            errno: libc::ENOSYS,
            detail: why,
        }
    }

    /// The error number (positive): `ENOENT` for a missing image or snapshot, `EBUSY`,
    /// `EEXIST`, `ESHUTDOWN` when the cluster has cut this client off (blocklisted).
    pub fn errno(&self) -> i32 {
        self.errno
    }

    pub fn is_not_found(&self) -> bool {
        self.errno == libc::ENOENT
    }

    /// This client was blocklisted: every later call fails, a new client is needed.
    pub fn is_blocklisted(&self) -> bool {
        self.errno == libc::ESHUTDOWN
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.call == "dlopen" {
            return f.write_str(&self.detail);
        }
        write!(f, "{}", self.call)?;
        if !self.what.is_empty() {
            write!(f, " {}", self.what)?;
        }
        write!(f, ": {}", io::Error::from_raw_os_error(self.errno))?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::new(io::Error::from_raw_os_error(e.errno).kind(), e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A C string of a name; names are checked by the caller, so a NUL is a bug.
fn c(s: &str) -> CString {
    CString::new(s).unwrap_or_else(|_| CString::new("\u{fffd}").expect("no NUL"))
}

fn check(call: &'static str, what: &str, ret: c_int) -> Result<()> {
    if ret < 0 {
        Err(Error::new(call, what, ret.into()))
    } else {
        Ok(())
    }
}
