//! The C API's types and functions, resolved from the libraries once per process.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::OnceLock;

use super::Error;

pub(super) type RadosT = *mut c_void;
pub(super) type IoctxT = *mut c_void;
pub(super) type ImageT = *mut c_void;
pub(super) type CompletionT = *mut c_void;
pub(super) type OptionsT = *mut c_void;
pub(super) type ReadOpT = *mut c_void;
pub(super) type WriteOpT = *mut c_void;
pub(super) type ProgressFn = unsafe extern "C" fn(u64, u64, *mut c_void) -> c_int;
pub(super) type DiffFn = unsafe extern "C" fn(u64, usize, c_int, *mut c_void) -> c_int;

/// `rbd_image_spec_t`.
#[repr(C)]
pub(super) struct ImageSpec {
    pub id: *mut c_char,
    pub name: *mut c_char,
}

/// `rbd_snap_info_t`.
#[repr(C)]
pub(super) struct SnapInfo {
    pub id: u64,
    pub size: u64,
    pub name: *const c_char,
}

/// `rbd_image_watcher_t`.
#[repr(C)]
pub(super) struct WatcherInfo {
    pub addr: *mut c_char,
    pub id: i64,
    pub cookie: u64,
}

/// The C API, resolved once per process.
pub(super) struct Api {
    pub rados_create2:
        unsafe extern "C" fn(*mut RadosT, *const c_char, *const c_char, u64) -> c_int,
    pub rados_conf_read_file: unsafe extern "C" fn(RadosT, *const c_char) -> c_int,
    pub rados_conf_set: unsafe extern "C" fn(RadosT, *const c_char, *const c_char) -> c_int,
    pub rados_connect: unsafe extern "C" fn(RadosT) -> c_int,
    pub rados_shutdown: unsafe extern "C" fn(RadosT),
    pub rados_getaddrs: unsafe extern "C" fn(RadosT, *mut *mut c_char) -> c_int,
    pub rados_wait_for_latest_osdmap: unsafe extern "C" fn(RadosT) -> c_int,
    #[allow(clippy::type_complexity)]
    pub rados_mon_command: unsafe extern "C" fn(
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
    pub rados_buffer_free: unsafe extern "C" fn(*mut c_char),
    pub rados_ioctx_create: unsafe extern "C" fn(RadosT, *const c_char, *mut IoctxT) -> c_int,
    pub rados_ioctx_destroy: unsafe extern "C" fn(IoctxT),
    pub rados_conf_get: unsafe extern "C" fn(RadosT, *const c_char, *mut c_char, usize) -> c_int,
    pub rados_get_instance_id: unsafe extern "C" fn(RadosT) -> u64,
    pub rados_ioctx_get_id: unsafe extern "C" fn(IoctxT) -> i64,
    pub rados_create_read_op: unsafe extern "C" fn() -> ReadOpT,
    pub rados_release_read_op: unsafe extern "C" fn(ReadOpT),
    #[allow(clippy::type_complexity)]
    pub rados_read_op_exec: unsafe extern "C" fn(
        ReadOpT,
        *const c_char,
        *const c_char,
        *const c_char,
        usize,
        *mut *mut c_char,
        *mut usize,
        *mut c_int,
    ),
    pub rados_read_op_operate: unsafe extern "C" fn(ReadOpT, IoctxT, *const c_char, c_int) -> c_int,
    pub rados_create_write_op: unsafe extern "C" fn() -> WriteOpT,
    pub rados_release_write_op: unsafe extern "C" fn(WriteOpT),
    pub rados_write_op_create: unsafe extern "C" fn(WriteOpT, c_int, *const c_char),
    pub rados_write_op_exec: unsafe extern "C" fn(
        WriteOpT,
        *const c_char,
        *const c_char,
        *const c_char,
        usize,
        *mut c_int,
    ),
    pub rados_write_op_operate:
        unsafe extern "C" fn(WriteOpT, IoctxT, *const c_char, *mut libc::time_t, c_int) -> c_int,
    pub rados_remove: unsafe extern "C" fn(IoctxT, *const c_char) -> c_int,
    pub rbd_list2: unsafe extern "C" fn(IoctxT, *mut ImageSpec, *mut usize) -> c_int,
    pub rbd_image_spec_list_cleanup: unsafe extern "C" fn(*mut ImageSpec, usize),
    pub rbd_image_options_create: unsafe extern "C" fn(*mut OptionsT),
    pub rbd_image_options_destroy: unsafe extern "C" fn(OptionsT),
    pub rbd_create4: unsafe extern "C" fn(IoctxT, *const c_char, u64, OptionsT) -> c_int,
    pub rbd_clone3: unsafe extern "C" fn(
        IoctxT,
        *const c_char,
        *const c_char,
        IoctxT,
        *const c_char,
        OptionsT,
    ) -> c_int,
    pub rbd_remove: unsafe extern "C" fn(IoctxT, *const c_char) -> c_int,
    pub rbd_rename: unsafe extern "C" fn(IoctxT, *const c_char, *const c_char) -> c_int,
    pub rbd_open: unsafe extern "C" fn(IoctxT, *const c_char, *mut ImageT, *const c_char) -> c_int,
    pub rbd_open_read_only:
        unsafe extern "C" fn(IoctxT, *const c_char, *mut ImageT, *const c_char) -> c_int,
    pub rbd_close: unsafe extern "C" fn(ImageT) -> c_int,
    pub rbd_get_size: unsafe extern "C" fn(ImageT, *mut u64) -> c_int,
    pub rbd_resize2: unsafe extern "C" fn(ImageT, u64, bool, ProgressFn, *mut c_void) -> c_int,
    pub rbd_snap_list: unsafe extern "C" fn(ImageT, *mut SnapInfo, *mut c_int) -> c_int,
    pub rbd_snap_list_end: unsafe extern "C" fn(*mut SnapInfo),
    pub rbd_snap_create: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
    pub rbd_snap_remove: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
    pub rbd_snap_rollback: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
    pub rbd_snap_protect: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
    pub rbd_snap_unprotect: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
    pub rbd_snap_is_protected: unsafe extern "C" fn(ImageT, *const c_char, *mut c_int) -> c_int,
    pub rbd_watchers_list: unsafe extern "C" fn(ImageT, *mut WatcherInfo, *mut usize) -> c_int,
    pub rbd_watchers_list_cleanup: unsafe extern "C" fn(*mut WatcherInfo, usize),
    pub rbd_diff_iterate2:
        unsafe extern "C" fn(ImageT, *const c_char, u64, u64, u8, u8, DiffFn, *mut c_void) -> c_int,
    pub rbd_read: unsafe extern "C" fn(ImageT, u64, usize, *mut c_char) -> isize,
    pub rbd_write_zeroes: unsafe extern "C" fn(ImageT, u64, usize, c_int, c_int) -> isize,
    pub rbd_flush: unsafe extern "C" fn(ImageT) -> c_int,
    pub rbd_aio_write:
        unsafe extern "C" fn(ImageT, u64, usize, *const c_char, CompletionT) -> c_int,
    pub rbd_aio_create_completion: unsafe extern "C" fn(
        *mut c_void,
        Option<unsafe extern "C" fn(CompletionT, *mut c_void)>,
        *mut CompletionT,
    ) -> c_int,
    pub rbd_aio_wait_for_complete: unsafe extern "C" fn(CompletionT) -> c_int,
    pub rbd_aio_get_return_value: unsafe extern "C" fn(CompletionT) -> isize,
    pub rbd_aio_release: unsafe extern "C" fn(CompletionT),
}

static API: OnceLock<Result<Api, String>> = OnceLock::new();

pub(super) fn api() -> Result<&'static Api, Error> {
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
        rados_conf_get: sym!(rados, rados_conf_get),
        rados_get_instance_id: sym!(rados, rados_get_instance_id),
        rados_ioctx_get_id: sym!(rados, rados_ioctx_get_id),
        rados_create_read_op: sym!(rados, rados_create_read_op),
        rados_release_read_op: sym!(rados, rados_release_read_op),
        rados_read_op_exec: sym!(rados, rados_read_op_exec),
        rados_read_op_operate: sym!(rados, rados_read_op_operate),
        rados_create_write_op: sym!(rados, rados_create_write_op),
        rados_release_write_op: sym!(rados, rados_release_write_op),
        rados_write_op_create: sym!(rados, rados_write_op_create),
        rados_write_op_exec: sym!(rados, rados_write_op_exec),
        rados_write_op_operate: sym!(rados, rados_write_op_operate),
        rados_remove: sym!(rados, rados_remove),
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
