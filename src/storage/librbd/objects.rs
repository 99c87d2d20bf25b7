//! RADOS objects of a pool, below librbd: object-class method calls on one object, several in
//! one operation (one round trip to its OSD, applied in order; a write all or nothing), and
//! removal. What [`super::clone`] makes images of.

use std::ffi::{c_char, c_int};

use super::ffi::{ReadOpT, WriteOpT};
use super::{Error, Pool, Result, c, check};

/// One call of an object class's method: `rbd.create`, say (errors name the method).
pub struct Call {
    pub class: &'static str,
    pub method: &'static str,
    pub input: Vec<u8>,
}

/// A call of a method of the `rbd` class.
pub fn rbd(method: &'static str, input: Vec<u8>) -> Call {
    Call {
        class: "rbd",
        method,
        input,
    }
}

impl Pool {
    /// Runs read-only `calls` on object `oid` in one operation: each call's answer, in order.
    /// Fails with the first call's error (a missing object is `ENOENT`).
    pub fn read_object(&self, oid: &str, calls: &[Call]) -> Result<Vec<Vec<u8>>> {
        struct Op(ReadOpT, &'static super::ffi::Api);
        impl Drop for Op {
            fn drop(&mut self) {
                // SAFETY: created by rados_create_read_op, released once.
                unsafe { (self.1.rados_release_read_op)(self.0) }
            }
        }
        let api = self.api();
        // SAFETY: no arguments; released by Op's Drop.
        let op = Op(unsafe { (api.rados_create_read_op)() }, api);
        let names: Vec<_> = calls.iter().map(|k| (c(k.class), c(k.method))).collect();
        // librados fills these when the operation runs: they must not move before then.
        let mut outs: Vec<(*mut c_char, usize, c_int)> =
            vec![(std::ptr::null_mut(), 0, 0); calls.len()];
        for ((call, (class, method)), out) in calls.iter().zip(&names).zip(outs.iter_mut()) {
            // SAFETY: an op made above; C strings and input alive until the operation ran;
            // the out pointers point into `outs`, which is not resized from here on.
            unsafe {
                (api.rados_read_op_exec)(
                    op.0,
                    class.as_ptr(),
                    method.as_ptr(),
                    call.input.as_ptr() as *const c_char,
                    call.input.len(),
                    &mut out.0,
                    &mut out.1,
                    &mut out.2,
                )
            };
        }
        // SAFETY: the op, this pool's I/O context, a C string.
        let ret = unsafe { (api.rados_read_op_operate)(op.0, self.ioctx, c(oid).as_ptr(), 0) };
        // Every buffer librados allocated is freed, whatever the outcome.
        let answers: Vec<(Vec<u8>, c_int)> = outs
            .into_iter()
            .map(|(buf, len, prval)| {
                if buf.is_null() {
                    return (Vec::new(), prval);
                }
                // SAFETY: librados allocated `len` bytes at `buf`, ours to free.
                let bytes = unsafe { std::slice::from_raw_parts(buf as *const u8, len) }.to_vec();
                unsafe { (api.rados_buffer_free)(buf) };
                (bytes, prval)
            })
            .collect();
        check("rados_read_op_operate", oid, ret)?;
        answers
            .into_iter()
            .zip(calls)
            .map(|((bytes, prval), call)| {
                check(call.method, oid, prval)?;
                Ok(bytes)
            })
            .collect()
    }

    /// Runs `calls` on object `oid` in one operation, all or nothing; `create` first creates
    /// the object, failing with `EEXIST` if it exists.
    pub fn write_object(&self, oid: &str, create: bool, calls: &[Call]) -> Result<()> {
        struct Op(WriteOpT, &'static super::ffi::Api);
        impl Drop for Op {
            fn drop(&mut self) {
                // SAFETY: created by rados_create_write_op, released once.
                unsafe { (self.1.rados_release_write_op)(self.0) }
            }
        }
        let api = self.api();
        // SAFETY: no arguments; released by Op's Drop.
        let op = Op(unsafe { (api.rados_create_write_op)() }, api);
        if create {
            // SAFETY: the op; LIBRADOS_CREATE_EXCLUSIVE; no category (deprecated).
            unsafe { (api.rados_write_op_create)(op.0, 1, std::ptr::null()) };
        }
        let names: Vec<_> = calls.iter().map(|k| (c(k.class), c(k.method))).collect();
        let mut results: Vec<c_int> = vec![0; calls.len()];
        for ((call, (class, method)), result) in calls.iter().zip(&names).zip(results.iter_mut()) {
            // SAFETY: as in read_object.
            unsafe {
                (api.rados_write_op_exec)(
                    op.0,
                    class.as_ptr(),
                    method.as_ptr(),
                    call.input.as_ptr() as *const c_char,
                    call.input.len(),
                    result,
                )
            };
        }
        // SAFETY: the op, this pool's I/O context, a C string, the current time.
        let ret = unsafe {
            (api.rados_write_op_operate)(op.0, self.ioctx, c(oid).as_ptr(), std::ptr::null_mut(), 0)
        };
        if ret < 0 {
            // The failing call (a call refused before it ran, by the user's caps say, has no
            // result of its own: the only call, or the operation).
            let failed = calls.iter().zip(&results).find(|(_, r)| **r < 0);
            let call = match (failed, calls) {
                (Some((call, _)), _) | (None, [call]) => call.method,
                (None, _) => "rados_write_op_operate",
            };
            return Err(Error::new(call, oid, ret.into()));
        }
        Ok(())
    }

    /// Removes object `oid` (`ENOENT` if it does not exist).
    pub fn remove_object(&self, oid: &str) -> Result<()> {
        // SAFETY: this pool's I/O context, a C string.
        let ret = unsafe { (self.api().rados_remove)(self.ioctx, c(oid).as_ptr()) };
        check("rados_remove", oid, ret)
    }

    /// The pool's id, as an image's parent names it.
    pub fn id(&self) -> i64 {
        // SAFETY: this pool's I/O context.
        unsafe { (self.api().rados_ioctx_get_id)(self.ioctx) }
    }
}
