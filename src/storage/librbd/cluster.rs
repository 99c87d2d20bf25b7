//! A client of the cluster ([`Cluster`]) and an I/O context on one of its pools ([`Pool`]).

use std::ffi::{CStr, c_char};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use super::ffi::{Api, ImageSpec, ImageT, IoctxT, OptionsT, RadosT, api};
use super::{Error, Image, Result, c, check};

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

    pub(super) fn api(&self) -> &'static Api {
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

    /// The value of Ceph setting `option` as this client has it.
    pub fn conf_get(&self, option: &str) -> Result<String> {
        let mut buf = vec![0u8; 256];
        // SAFETY: connected handle, C string, `buf.len()` bytes of room (NUL-terminated).
        let ret = unsafe {
            (self.api().rados_conf_get)(
                self.0.rados,
                c(option).as_ptr(),
                buf.as_mut_ptr() as *mut c_char,
                buf.len(),
            )
        };
        check("rados_conf_get", option, ret)?;
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
    }

    /// This client instance's id (`client.<id>` to the cluster).
    pub fn instance_id(&self) -> u64 {
        // SAFETY: connected handle.
        unsafe { (self.api().rados_get_instance_id)(self.0.rados) }
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
            clones_by_objects: OnceLock::new(),
        })
    }
}

/// An I/O context on one pool of a cluster.
pub struct Pool {
    pub(super) ioctx: IoctxT,
    cluster: Cluster,
    /// Whether clones are made object by object here ([`super::clone`]), decided on the
    /// first clone from the client's and the pool's settings.
    pub(super) clones_by_objects: OnceLock<bool>,
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
    pub(super) fn api(&self) -> &'static Api {
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

    /// A clone `child` of `parent@snapshot`, in this pool, made by librbd.
    pub(super) fn clone_with_librbd(
        &self,
        parent: &str,
        snapshot: &str,
        child: &str,
    ) -> Result<()> {
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
