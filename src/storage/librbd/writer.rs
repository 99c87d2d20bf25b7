//! Writes into an open image with a few in flight.

use std::collections::VecDeque;
use std::ffi::c_char;

use super::ffi::CompletionT;
use super::{Error, Image, Result, check};

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
