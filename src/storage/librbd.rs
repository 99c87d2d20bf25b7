//! librados and librbd in process: the few calls of Ceph's C API the RBD storage makes, behind
//! a safe interface. Every `unsafe` of the RBD storage is in this file.
//!
//! The libraries are loaded when RBD storage is first opened (`dlopen` of `librbd.so.1`, which
//! brings `librados.so.2`): the binary builds without Ceph's development packages and runs
//! without Ceph at all, and only `--storage rbd` needs Debian's `librbd1` (which `ceph-common`,
//! needed anyway, depends on). The declarations below are those of `rbd/librbd.h` and
//! `rados/librados.h`, whose C API Ceph keeps stable across releases (checked against 16.2).
//!
//! - [`Cluster`]: a client of the cluster (`rados_t`, thread-safe), with monitor commands.
//! - [`Pool`]: an I/O context on a pool (`rados_ioctx_t`): listing, creating, cloning,
//!   renaming and removing images, and opening them.
//! - [`Image`]: an open image (`rbd_image_t`): size, snapshots, watchers, reads, and
//!   [`Writer`], writes with a few in flight.
//!
//! Each handle keeps what it was made from alive (an image its cluster), so nothing is closed
//! under another. All calls block: callers run them off the async runtime.

use std::collections::VecDeque;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock};

type RadosT = *mut c_void;
type IoctxT = *mut c_void;
type ImageT = *mut c_void;
type CompletionT = *mut c_void;
type OptionsT = *mut c_void;
type ProgressFn = unsafe extern "C" fn(u64, u64, *mut c_void) -> c_int;
type DiffFn = unsafe extern "C" fn(u64, usize, c_int, *mut c_void) -> c_int;

/// `rbd_image_spec_t`.
#[repr(C)]
struct ImageSpec {
    id: *mut c_char,
    name: *mut c_char,
}

/// `rbd_snap_info_t`.
#[repr(C)]
struct SnapInfo {
    id: u64,
    size: u64,
    name: *const c_char,
}

/// `rbd_image_watcher_t`.
#[repr(C)]
struct WatcherInfo {
    addr: *mut c_char,
    id: i64,
    cookie: u64,
}

/// The C API, resolved once per process.
struct Api {
    rados_create2: unsafe extern "C" fn(*mut RadosT, *const c_char, *const c_char, u64) -> c_int,
    rados_conf_read_file: unsafe extern "C" fn(RadosT, *const c_char) -> c_int,
    rados_conf_set: unsafe extern "C" fn(RadosT, *const c_char, *const c_char) -> c_int,
    rados_connect: unsafe extern "C" fn(RadosT) -> c_int,
    rados_shutdown: unsafe extern "C" fn(RadosT),
    rados_getaddrs: unsafe extern "C" fn(RadosT, *mut *mut c_char) -> c_int,
    rados_wait_for_latest_osdmap: unsafe extern "C" fn(RadosT) -> c_int,
    #[allow(clippy::type_complexity)]
    rados_mon_command: unsafe extern "C" fn(
        RadosT,
        *mut *const c_char,
        usize,
        *const c_char,
        usize,
        *mut *mut c_char,
        *mut usize,
        *mut *mut c_char,
        *mut usize,
    ) -> c_int,
    rados_buffer_free: unsafe extern "C" fn(*mut c_char),
    rados_ioctx_create: unsafe extern "C" fn(RadosT, *const c_char, *mut IoctxT) -> c_int,
    rados_ioctx_destroy: unsafe extern "C" fn(IoctxT),
    rbd_list2: unsafe extern "C" fn(IoctxT, *mut ImageSpec, *mut usize) -> c_int,
    rbd_image_spec_list_cleanup: unsafe extern "C" fn(*mut ImageSpec, usize),
    rbd_image_options_create: unsafe extern "C" fn(*mut OptionsT),
    rbd_image_options_destroy: unsafe extern "C" fn(OptionsT),
    rbd_create4: unsafe extern "C" fn(IoctxT, *const c_char, u64, OptionsT) -> c_int,
    rbd_clone3: unsafe extern "C" fn(
        IoctxT,
        *const c_char,
        *const c_char,
        IoctxT,
        *const c_char,
        OptionsT,
    ) -> c_int,
    rbd_remove: unsafe extern "C" fn(IoctxT, *const c_char) -> c_int,
    rbd_rename: unsafe extern "C" fn(IoctxT, *const c_char, *const c_char) -> c_int,
    rbd_open: unsafe extern "C" fn(IoctxT, *const c_char, *mut ImageT, *const c_char) -> c_int,
    rbd_open_read_only:
        unsafe extern "C" fn(IoctxT, *const c_char, *mut ImageT, *const c_char) -> c_int,
    rbd_close: unsafe extern "C" fn(ImageT) -> c_int,
    rbd_get_size: unsafe extern "C" fn(ImageT, *mut u64) -> c_int,
    rbd_resize2: unsafe extern "C" fn(ImageT, u64, bool, ProgressFn, *mut c_void) -> c_int,
    rbd_snap_list: unsafe extern "C" fn(ImageT, *mut SnapInfo, *mut c_int) -> c_int,
    rbd_snap_list_end: unsafe extern "C" fn(*mut SnapInfo),
    rbd_snap_create: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
    rbd_snap_remove: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
    rbd_snap_rollback: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
    rbd_snap_protect: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
    rbd_snap_unprotect: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
    rbd_snap_is_protected: unsafe extern "C" fn(ImageT, *const c_char, *mut c_int) -> c_int,
    rbd_watchers_list: unsafe extern "C" fn(ImageT, *mut WatcherInfo, *mut usize) -> c_int,
    rbd_watchers_list_cleanup: unsafe extern "C" fn(*mut WatcherInfo, usize),
    rbd_diff_iterate2:
        unsafe extern "C" fn(ImageT, *const c_char, u64, u64, u8, u8, DiffFn, *mut c_void) -> c_int,
    rbd_read: unsafe extern "C" fn(ImageT, u64, usize, *mut c_char) -> isize,
    rbd_write_zeroes: unsafe extern "C" fn(ImageT, u64, usize, c_int, c_int) -> isize,
    rbd_flush: unsafe extern "C" fn(ImageT) -> c_int,
    rbd_aio_write: unsafe extern "C" fn(ImageT, u64, usize, *const c_char, CompletionT) -> c_int,
    rbd_aio_create_completion: unsafe extern "C" fn(
        *mut c_void,
        Option<unsafe extern "C" fn(CompletionT, *mut c_void)>,
        *mut CompletionT,
    ) -> c_int,
    rbd_aio_wait_for_complete: unsafe extern "C" fn(CompletionT) -> c_int,
    rbd_aio_get_return_value: unsafe extern "C" fn(CompletionT) -> isize,
    rbd_aio_release: unsafe extern "C" fn(CompletionT),
}

static API: OnceLock<Result<Api, String>> = OnceLock::new();

fn api() -> Result<&'static Api, Error> {
    API.get_or_init(load)
        .as_ref()
        .map_err(|e| Error::unavailable(e.clone()))
}

/// Opens the libraries (for the life of the process) and resolves every symbol.
fn load() -> Result<Api, String> {
    fn open(name: &str) -> Result<*mut c_void, String> {
        let c = CString::new(name).expect("a library name without NUL");
        // SAFETY: dlopen with a valid C string; the handle is never closed.
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if handle.is_null() {
            // SAFETY: dlerror returns a C string owned by libdl, or NULL.
            let why = unsafe { libc::dlerror() };
            let why = if why.is_null() {
                String::from("not found")
            } else {
                unsafe { CStr::from_ptr(why) }
                    .to_string_lossy()
                    .into_owned()
            };
            return Err(format!(
                "cannot load {name} ({why}): RBD storage needs Debian's librbd1 and librados2"
            ));
        }
        Ok(handle)
    }
    let rados = open("librados.so.2")?;
    let rbd = open("librbd.so.1")?;
    /// The function `name` of `lib`, as the C function pointer type `T` of the field it fills.
    fn sym<T: Copy>(lib: *mut c_void, name: &str) -> Result<T, String> {
        assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<*mut c_void>());
        let c = CString::new(name).expect("a symbol name without NUL");
        // SAFETY: dlsym on a handle dlopen returned.
        let p = unsafe { libc::dlsym(lib, c.as_ptr()) };
        if p.is_null() {
            return Err(format!("Ceph's libraries lack {name}"));
        }
        // SAFETY: the symbol is the C function of this name, whose prototype `T` (the field's
        // type) repeats from Ceph's headers; a function pointer is pointer-sized.
        Ok(unsafe { std::mem::transmute_copy::<*mut c_void, T>(&p) })
    }
    macro_rules! sym {
        ($lib:expr, $name:ident) => {
            sym($lib, stringify!($name))?
        };
    }
    Ok(Api {
        rados_create2: sym!(rados, rados_create2),
        rados_conf_read_file: sym!(rados, rados_conf_read_file),
        rados_conf_set: sym!(rados, rados_conf_set),
        rados_connect: sym!(rados, rados_connect),
        rados_shutdown: sym!(rados, rados_shutdown),
        rados_getaddrs: sym!(rados, rados_getaddrs),
        rados_wait_for_latest_osdmap: sym!(rados, rados_wait_for_latest_osdmap),
        rados_mon_command: sym!(rados, rados_mon_command),
        rados_buffer_free: sym!(rados, rados_buffer_free),
        rados_ioctx_create: sym!(rados, rados_ioctx_create),
        rados_ioctx_destroy: sym!(rados, rados_ioctx_destroy),
        rbd_list2: sym!(rbd, rbd_list2),
        rbd_image_spec_list_cleanup: sym!(rbd, rbd_image_spec_list_cleanup),
        rbd_image_options_create: sym!(rbd, rbd_image_options_create),
        rbd_image_options_destroy: sym!(rbd, rbd_image_options_destroy),
        rbd_create4: sym!(rbd, rbd_create4),
        rbd_clone3: sym!(rbd, rbd_clone3),
        rbd_remove: sym!(rbd, rbd_remove),
        rbd_rename: sym!(rbd, rbd_rename),
        rbd_open: sym!(rbd, rbd_open),
        rbd_open_read_only: sym!(rbd, rbd_open_read_only),
        rbd_close: sym!(rbd, rbd_close),
        rbd_get_size: sym!(rbd, rbd_get_size),
        rbd_resize2: sym!(rbd, rbd_resize2),
        rbd_snap_list: sym!(rbd, rbd_snap_list),
        rbd_snap_list_end: sym!(rbd, rbd_snap_list_end),
        rbd_snap_create: sym!(rbd, rbd_snap_create),
        rbd_snap_remove: sym!(rbd, rbd_snap_remove),
        rbd_snap_rollback: sym!(rbd, rbd_snap_rollback),
        rbd_snap_protect: sym!(rbd, rbd_snap_protect),
        rbd_snap_unprotect: sym!(rbd, rbd_snap_unprotect),
        rbd_snap_is_protected: sym!(rbd, rbd_snap_is_protected),
        rbd_watchers_list: sym!(rbd, rbd_watchers_list),
        rbd_watchers_list_cleanup: sym!(rbd, rbd_watchers_list_cleanup),
        rbd_diff_iterate2: sym!(rbd, rbd_diff_iterate2),
        rbd_read: sym!(rbd, rbd_read),
        rbd_write_zeroes: sym!(rbd, rbd_write_zeroes),
        rbd_flush: sym!(rbd, rbd_flush),
        rbd_aio_write: sym!(rbd, rbd_aio_write),
        rbd_aio_create_completion: sym!(rbd, rbd_aio_create_completion),
        rbd_aio_wait_for_complete: sym!(rbd, rbd_aio_wait_for_complete),
        rbd_aio_get_return_value: sym!(rbd, rbd_aio_get_return_value),
        rbd_aio_release: sym!(rbd, rbd_aio_release),
    })
}

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

struct ClusterHandle {
    api: &'static Api,
    rados: RadosT,
}

// SAFETY: librados cluster handles are thread-safe (one handle serves every thread of a
// client); it is shut down once, when the last owner goes.
unsafe impl Send for ClusterHandle {}
unsafe impl Sync for ClusterHandle {}

impl Drop for ClusterHandle {
    fn drop(&mut self) {
        // SAFETY: connected handle; nothing made from it outlives it (each holds an Arc).
        unsafe { (self.api.rados_shutdown)(self.rados) }
    }
}

/// How a client reaches its cluster.
pub struct Connect<'a> {
    /// `ceph.conf`; Ceph's default search when `None`.
    pub conf: Option<&'a Path>,
    /// The Ceph user without `client.`; `admin` when `None`.
    pub user: Option<&'a str>,
    /// Seconds to wait for the monitors when connecting, and for a monitor command.
    pub timeout_seconds: u32,
}

/// A client of the cluster, connected. Cheap to clone (one client).
#[derive(Clone)]
pub struct Cluster(Arc<ClusterHandle>);

impl Cluster {
    pub fn connect(how: &Connect<'_>) -> Result<Cluster> {
        let api = api()?;
        let user = c(&format!("client.{}", how.user.unwrap_or("admin")));
        let mut rados: RadosT = std::ptr::null_mut();
        // SAFETY: out pointer to a local; C strings live across the call.
        let ret = unsafe { (api.rados_create2)(&mut rados, c("ceph").as_ptr(), user.as_ptr(), 0) };
        check("rados_create2", "", ret)?;
        // From here the handle is shut down on every path, by its Drop.
        let handle = ClusterHandle { api, rados };
        let conf = how.conf.map(|p| c(&p.to_string_lossy()));
        // SAFETY: a created handle, a C string or NULL (Ceph's default search).
        let ret = unsafe {
            (api.rados_conf_read_file)(
                rados,
                conf.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            )
        };
        check("rados_conf_read_file", "", ret)?;
        let timeout = how.timeout_seconds.to_string();
        for (option, value) in [
            ("client_mount_timeout", timeout.as_str()),
            ("rados_mon_op_timeout", timeout.as_str()),
        ] {
            // SAFETY: a created handle, C strings.
            let ret = unsafe { (api.rados_conf_set)(rados, c(option).as_ptr(), c(value).as_ptr()) };
            check("rados_conf_set", option, ret)?;
        }
        // SAFETY: a configured handle.
        let ret = unsafe { (api.rados_connect)(rados) };
        check("rados_connect", "", ret)?;
        Ok(Cluster(Arc::new(handle)))
    }

    fn api(&self) -> &'static Api {
        self.0.api
    }

    /// This client's address, as the cluster's blocklist and an image's watchers name it.
    pub fn address(&self) -> Result<String> {
        let mut out: *mut c_char = std::ptr::null_mut();
        // SAFETY: connected handle; the string is ours to free with rados_buffer_free.
        let ret = unsafe { (self.api().rados_getaddrs)(self.0.rados, &mut out) };
        check("rados_getaddrs", "", ret)?;
        let text = unsafe { CStr::from_ptr(out) }
            .to_string_lossy()
            .into_owned();
        unsafe { (self.api().rados_buffer_free)(out) };
        Ok(text)
    }

    /// Waits until this client has the newest OSD map (after a blocklisting, say).
    pub fn wait_for_latest_osdmap(&self) -> Result<()> {
        // SAFETY: connected handle.
        let ret = unsafe { (self.api().rados_wait_for_latest_osdmap)(self.0.rados) };
        check("rados_wait_for_latest_osdmap", "", ret)
    }

    /// Runs a monitor command (`{"prefix": ..., ...}` as `ceph` sends it); its output.
    pub fn mon_command(&self, command: &serde_json::Value) -> Result<Vec<u8>> {
        let text = c(&command.to_string());
        let mut cmd = [text.as_ptr()];
        let (mut out, mut out_len) = (std::ptr::null_mut::<c_char>(), 0usize);
        let (mut status, mut status_len) = (std::ptr::null_mut::<c_char>(), 0usize);
        // SAFETY: one C string in the command array, no input; the two buffers are ours to
        // free with rados_buffer_free (either may be NULL).
        let ret = unsafe {
            (self.api().rados_mon_command)(
                self.0.rados,
                cmd.as_mut_ptr(),
                1,
                std::ptr::null(),
                0,
                &mut out,
                &mut out_len,
                &mut status,
                &mut status_len,
            )
        };
        let take = |p: *mut c_char, len: usize| -> Vec<u8> {
            if p.is_null() {
                return Vec::new();
            }
            // SAFETY: librados gave `len` bytes at `p`.
            let v = unsafe { std::slice::from_raw_parts(p as *const u8, len) }.to_vec();
            unsafe { (self.api().rados_buffer_free)(p) };
            v
        };
        let output = take(out, out_len);
        let status = take(status, status_len);
        if ret < 0 {
            let mut e = Error::new(
                "mon command",
                command["prefix"].as_str().unwrap_or_default(),
                ret.into(),
            );
            e.detail = String::from_utf8_lossy(&status).trim().to_string();
            return Err(e);
        }
        Ok(output)
    }

    /// An I/O context on `pool`.
    pub fn pool(&self, pool: &str) -> Result<Pool> {
        let mut ioctx: IoctxT = std::ptr::null_mut();
        // SAFETY: connected handle, C string, out pointer to a local.
        let ret =
            unsafe { (self.api().rados_ioctx_create)(self.0.rados, c(pool).as_ptr(), &mut ioctx) };
        check("rados_ioctx_create", pool, ret)?;
        Ok(Pool {
            ioctx,
            cluster: self.clone(),
        })
    }
}

/// An I/O context on one pool of a cluster.
pub struct Pool {
    ioctx: IoctxT,
    cluster: Cluster,
}

// SAFETY: librbd's pool-level calls copy the I/O context they are given, and librados I/O
// contexts may be used from several threads for operations that do not change the context
// (its snapshot or namespace, which this module never changes).
unsafe impl Send for Pool {}
unsafe impl Sync for Pool {}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: created by rados_ioctx_create; the cluster outlives it (held here).
        unsafe { (self.api().rados_ioctx_destroy)(self.ioctx) }
    }
}

/// Image options left empty: the cluster's defaults (format 2, `rbd_default_features`), as
/// `rbd create` and `rbd clone` use them.
struct Options(OptionsT, &'static Api);

impl Options {
    fn new(api: &'static Api) -> Options {
        let mut opts: OptionsT = std::ptr::null_mut();
        // SAFETY: out pointer to a local.
        unsafe { (api.rbd_image_options_create)(&mut opts) };
        Options(opts, api)
    }
}

impl Drop for Options {
    fn drop(&mut self) {
        // SAFETY: created by rbd_image_options_create.
        unsafe { (self.1.rbd_image_options_destroy)(self.0) }
    }
}

impl Pool {
    fn api(&self) -> &'static Api {
        self.cluster.api()
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The names of the pool's images.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut capacity = 64usize;
        loop {
            let mut specs: Vec<ImageSpec> = Vec::with_capacity(capacity);
            let mut count = capacity;
            // SAFETY: room for `count` specs; on success librbd filled `count` of them, whose
            // strings rbd_image_spec_list_cleanup frees.
            let ret = unsafe { (self.api().rbd_list2)(self.ioctx, specs.as_mut_ptr(), &mut count) };
            if ret == -libc::ERANGE {
                capacity = count.max(capacity * 2);
                continue;
            }
            check("rbd_list2", "", ret)?;
            unsafe { specs.set_len(count) };
            let names = specs
                .iter()
                .map(|s| {
                    unsafe { CStr::from_ptr(s.name) }
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            unsafe { (self.api().rbd_image_spec_list_cleanup)(specs.as_mut_ptr(), count) };
            return Ok(names);
        }
    }

    /// A new image of `size` bytes, reading as zeros.
    pub fn create(&self, name: &str, size: u64) -> Result<()> {
        let opts = Options::new(self.api());
        // SAFETY: I/O context, C string, options made above.
        let ret = unsafe { (self.api().rbd_create4)(self.ioctx, c(name).as_ptr(), size, opts.0) };
        check("rbd_create", name, ret)
    }

    /// A clone `child` of `parent@snapshot`, in this pool.
    pub fn clone_image(&self, parent: &str, snapshot: &str, child: &str) -> Result<()> {
        let opts = Options::new(self.api());
        // SAFETY: the same I/O context for both pools, C strings, options made above.
        let ret = unsafe {
            (self.api().rbd_clone3)(
                self.ioctx,
                c(parent).as_ptr(),
                c(snapshot).as_ptr(),
                self.ioctx,
                c(child).as_ptr(),
                opts.0,
            )
        };
        check("rbd_clone", child, ret)
    }

    /// Removes an image without snapshots that nothing has open.
    pub fn remove(&self, name: &str) -> Result<()> {
        // SAFETY: I/O context, C string.
        let ret = unsafe { (self.api().rbd_remove)(self.ioctx, c(name).as_ptr()) };
        check("rbd_remove", name, ret)
    }

    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        // SAFETY: I/O context, C strings.
        let ret = unsafe { (self.api().rbd_rename)(self.ioctx, c(from).as_ptr(), c(to).as_ptr()) };
        check("rbd_rename", from, ret)
    }

    /// Opens an image to change or write it (this client then watches it).
    pub fn open(&self, name: &str) -> Result<Image> {
        self.open_with(name, false)
    }

    /// Opens an image to read it or its metadata, without watching it.
    pub fn open_read_only(&self, name: &str) -> Result<Image> {
        self.open_with(name, true)
    }

    fn open_with(&self, name: &str, read_only: bool) -> Result<Image> {
        let mut image: ImageT = std::ptr::null_mut();
        let open = if read_only {
            self.api().rbd_open_read_only
        } else {
            self.api().rbd_open
        };
        // SAFETY: I/O context, C string, out pointer to a local, no snapshot.
        let ret = unsafe { open(self.ioctx, c(name).as_ptr(), &mut image, std::ptr::null()) };
        check("rbd_open", name, ret)?;
        Ok(Image {
            image,
            name: name.to_string(),
            cluster: self.cluster.clone(),
        })
    }
}

/// A snapshot of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    pub size: u64,
}

/// An open image; closed when dropped.
pub struct Image {
    image: ImageT,
    name: String,
    cluster: Cluster,
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
    fn api(&self) -> &'static Api {
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

/// Writes in flight at once: enough to keep the OSDs busy while the next buffer is prepared.
const IN_FLIGHT: usize = 8;

struct InFlight {
    completion: CompletionT,
    /// The bytes being written: librbd reads them until the write completes.
    data: Vec<u8>,
}

/// Writes into an open image with up to [`IN_FLIGHT`] writes in flight (each a copy of the
/// caller's bytes); [`Writer::flush`] waits for them and makes them durable. Dropping a writer
/// waits for what is in flight before the image is closed.
pub struct Writer {
    image: Image,
    in_flight: VecDeque<InFlight>,
    spare: Vec<Vec<u8>>,
}

// SAFETY: the image may move between threads (see `Image`), and so may its completions,
// which librbd's threads complete whichever thread waits for them.
unsafe impl Send for Writer {}

impl Writer {
    pub fn new(image: Image) -> Writer {
        Writer {
            image,
            in_flight: VecDeque::new(),
            spare: Vec::new(),
        }
    }

    pub fn image(&self) -> &Image {
        &self.image
    }

    /// Starts writing `data` at `offset` (after waiting for the oldest write when
    /// [`IN_FLIGHT`] are already in flight). A failed write is reported by a later call.
    pub fn write_at(&mut self, data: &[u8], offset: u64) -> Result<()> {
        if self.in_flight.len() >= IN_FLIGHT {
            self.wait_oldest()?;
        }
        let mut copy = self.spare.pop().unwrap_or_default();
        copy.clear();
        copy.extend_from_slice(data);
        let api = self.image.api();
        let mut completion: CompletionT = std::ptr::null_mut();
        // SAFETY: out pointer to a local; no callback.
        let ret =
            unsafe { (api.rbd_aio_create_completion)(std::ptr::null_mut(), None, &mut completion) };
        check("rbd_aio_create_completion", &self.image.name, ret)?;
        // SAFETY: open image; `copy` stays alive and unmoved (its heap buffer) in
        // `in_flight` until the completion has been waited for.
        let ret = unsafe {
            (api.rbd_aio_write)(
                self.image.image,
                offset,
                copy.len(),
                copy.as_ptr() as *const c_char,
                completion,
            )
        };
        if ret < 0 {
            unsafe { (api.rbd_aio_release)(completion) };
            return Err(Error::new("rbd_aio_write", &self.image.name, ret.into()));
        }
        self.in_flight.push_back(InFlight {
            completion,
            data: copy,
        });
        Ok(())
    }

    fn wait_oldest(&mut self) -> Result<()> {
        let Some(write) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let api = self.image.api();
        // SAFETY: a completion of a write that was started; released once, here.
        let ret = unsafe {
            (api.rbd_aio_wait_for_complete)(write.completion);
            let ret = (api.rbd_aio_get_return_value)(write.completion);
            (api.rbd_aio_release)(write.completion);
            ret
        };
        self.spare.push(write.data);
        if ret < 0 {
            return Err(Error::new("rbd_aio_write", &self.image.name, ret as i64));
        }
        Ok(())
    }

    /// Waits for every write in flight, then for them to be durable.
    pub fn flush(&mut self) -> Result<()> {
        let mut first = Ok(());
        while !self.in_flight.is_empty() {
            if let Err(e) = self.wait_oldest()
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first?;
        self.image.flush()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        while !self.in_flight.is_empty() {
            let _ = self.wait_oldest();
        }
    }
}
