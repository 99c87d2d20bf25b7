//! Recognising compression by its magic bytes (never by the file name) and decompressing.
//!
//! gzip is read as a sequence of members (what `cat a.gz b.gz` and `pigz` produce), xz as a
//! sequence of streams, zstd as a sequence of frames. Anything else is taken as a raw image.
//!
//! The xz and zstd decoders allocate what the data's headers ask for (an xz dictionary, a zstd
//! window: up to 4 GiB and 2 GiB), so they run under a memory limit: an xz block whose filters
//! need more than the limit (liblzma's own figure: the dictionary and a few dozen KiB), or a
//! zstd frame whose window is larger than the largest power of two within it, fails with
//! [`MemoryLimitExceeded`] when its header is read, before anything of it is decoded. gzip's
//! window is 32 KiB.
//!
//! Some input decodes to nothing: zstd skippable frames, xz stream padding, empty gzip members.
//! Legitimate files hold little of it (a seek table, a few bytes between streams), so the
//! decoder may read at most a given amount of input since it last produced a byte of image,
//! and fails with [`NoImageBytes`] past it: a source cannot keep a fetch busy with data that
//! never becomes an image. Every byte the decoder produces counts, zeros included: an image's
//! empty stretches compress to little and are not padding.

use std::io::{self, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use liblzma::stream::Stream;
use zstd::zstd_safe::zstd_sys::ZSTD_ErrorCode;

/// How the fetched data is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "raw",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }

    /// Recognises the format from the first bytes of the data.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// The longest magic number we look for.
const MAGIC_LEN: usize = 6;

/// Buffer between the network chunks and the decompressor.
const READ_BUFFER: usize = 256 << 10;

/// The data needs more memory to decompress than the limit given to [`open`]. The decoders'
/// `io::Error`s carry it.
#[derive(Debug, thiserror::Error)]
#[error("the {} data needs more than {limit} bytes of memory to decompress", compression.name())]
pub struct MemoryLimitExceeded {
    pub compression: Compression,
    pub limit: u64,
}

/// The decoder read more than `limit` bytes of input without producing a byte of image. The
/// reader's `io::Error`s carry it.
#[derive(Debug, thiserror::Error)]
#[error("the data held more than {limit} bytes that decode to nothing")]
pub struct NoImageBytes {
    pub limit: u64,
}

/// Reads the first bytes of `input`, recognises its format and returns a reader of the
/// uncompressed image, whose decoder may use `memory_limit` bytes and read at most
/// `max_padding` bytes of input without producing image bytes (0: no bound; see the module's
/// notes).
pub fn open<R: Read + Send + 'static>(
    input: R,
    memory_limit: u64,
    max_padding: u64,
) -> io::Result<(Compression, Box<dyn Read + Send>)> {
    let meter = Arc::new(Meter::default());
    let input = MeteredInput {
        inner: input,
        meter: meter.clone(),
        limit: max_padding,
    };
    let (kind, decoder) = open_decoder(input, memory_limit)?;
    Ok((
        kind,
        Box::new(MeteredOutput {
            inner: decoder,
            meter,
        }),
    ))
}

/// Input read, and how much of it had been read when the decoder last produced image bytes.
#[derive(Debug, Default)]
struct Meter {
    fed: AtomicU64,
    fed_at_output: AtomicU64,
}

/// The decoder's input: refuses to give more once `limit` bytes went in since the last image
/// byte came out.
struct MeteredInput<R> {
    inner: R,
    meter: Arc<Meter>,
    limit: u64,
}

impl<R: Read> Read for MeteredInput<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let fed = self.meter.fed.load(Ordering::Relaxed);
        let since_output = fed - self.meter.fed_at_output.load(Ordering::Relaxed);
        if self.limit > 0 && since_output >= self.limit {
            return Err(io::Error::other(NoImageBytes { limit: self.limit }));
        }
        let n = self.inner.read(buf)?;
        self.meter.fed.store(fed + n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The decoder's output: notes when image bytes come out.
struct MeteredOutput {
    inner: Box<dyn Read + Send>,
    meter: Arc<Meter>,
}

impl Read for MeteredOutput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            let fed = self.meter.fed.load(Ordering::Relaxed);
            self.meter.fed_at_output.store(fed, Ordering::Relaxed);
        }
        Ok(n)
    }
}

fn open_decoder<R: Read + Send + 'static>(
    mut input: R,
    memory_limit: u64,
) -> io::Result<(Compression, Box<dyn Read + Send>)> {
    let mut head = Vec::with_capacity(MAGIC_LEN);
    while head.len() < MAGIC_LEN {
        let mut byte = [0u8; MAGIC_LEN];
        let n = input.read(&mut byte[..MAGIC_LEN - head.len()])?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&byte[..n]);
    }
    let kind = Compression::detect(&head);
    let data = BufReader::with_capacity(READ_BUFFER, io::Cursor::new(head).chain(input));
    let reader: Box<dyn Read + Send> = match kind {
        Compression::None => Box::new(data),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(data)),
        Compression::Xz => {
            let stream = Stream::new_stream_decoder(memory_limit, liblzma::stream::CONCATENATED)?;
            Box::new(Limited {
                decoder: liblzma::bufread::XzDecoder::new_stream(data, stream),
                compression: kind,
                limit: memory_limit,
            })
        }
        Compression::Zstd => {
            let window_log_max = zstd_window_log_max(memory_limit);
            let mut decoder = zstd::stream::read::Decoder::with_buffer(data)?;
            decoder.window_log_max(window_log_max)?;
            Box::new(Limited {
                decoder,
                compression: kind,
                limit: 1 << window_log_max,
            })
        }
    };
    Ok((kind, reader))
}

/// The largest zstd window a limit allows, as a power of two: zstd takes the limit as a
/// logarithm, from 10 to 31 (30 on 32-bit machines; `ZSTD_WINDOWLOG_ABSOLUTEMIN` and
/// `ZSTD_WINDOWLOG_MAX`). Frames of the legacy formats v0.5 to v0.7, which the decoder still
/// reads after a modern frame, have windows of at most 2^27 whatever the limit.
fn zstd_window_log_max(memory_limit: u64) -> u32 {
    const MIN: u32 = 10;
    const MAX: u32 = if cfg!(target_pointer_width = "64") {
        31
    } else {
        30
    };
    (63 - memory_limit.max(1).leading_zeros()).clamp(MIN, MAX)
}

/// A decoder whose "needs more memory" errors become [`MemoryLimitExceeded`].
struct Limited<D> {
    decoder: D,
    compression: Compression,
    limit: u64,
}

impl<D: Read> Read for Limited<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.decoder.read(buf).map_err(|err| {
            if needs_more_memory(&err) {
                io::Error::other(MemoryLimitExceeded {
                    compression: self.compression,
                    limit: self.limit,
                })
            } else {
                err
            }
        })
    }
}

/// liblzma's `LZMA_MEMLIMIT_ERROR`, or zstd's "Frame requires too much memory for decoding".
fn needs_more_memory(err: &io::Error) -> bool {
    let Some(inner) = err.get_ref() else {
        return false;
    };
    if let Some(lzma) = inner.downcast_ref::<liblzma::stream::Error>() {
        return matches!(lzma, liblzma::stream::Error::MemLimit);
    }
    if let Some(zstd) = inner.downcast_ref::<zstd::Error>() {
        return zstd.is(ZSTD_ErrorCode::ZSTD_error_frameParameter_windowTooLarge);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use liblzma::stream::{Check, Filters, LzmaOptions};
    use std::io::Write;

    const MIB: u64 = 1 << 20;
    /// The server's default limit.
    const LIMIT: u64 = 256 * MIB;
    /// The server's default bound on input that decodes to nothing.
    const PADDING: u64 = 64 * MIB;

    fn decoded(data: Vec<u8>) -> (Compression, Vec<u8>) {
        decoded_within(data, LIMIT).unwrap()
    }

    fn decoded_within(data: Vec<u8>, limit: u64) -> io::Result<(Compression, Vec<u8>)> {
        let (kind, mut reader) = open(io::Cursor::new(data), limit, PADDING)?;
        let mut out = Vec::new();
        reader.read_to_end(&mut out)?;
        Ok((kind, out))
    }

    /// Opens `data` and reads once: the read must fail with the error it returns.
    fn first_read_fails(data: Vec<u8>, limit: u64) -> MemoryLimitExceeded {
        let (_, mut reader) = open(io::Cursor::new(data), limit, PADDING).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        match reader.read(&mut buf) {
            Ok(n) => panic!("the first read gave {n} bytes"),
            Err(err) => {
                let inner = err.into_inner().expect("a typed error");
                *inner
                    .downcast::<MemoryLimitExceeded>()
                    .unwrap_or_else(|other| panic!("not a memory limit: {other}"))
            }
        }
    }

    /// An xz stream whose LZMA2 header asks for a dictionary of `dict_size` bytes. (The
    /// encoder's and decoder's big buffers are allocated but only touched as far as the data
    /// goes, so a big dictionary costs little here.)
    fn xz_with_dictionary(data: &[u8], dict_size: u64) -> Vec<u8> {
        let mut options = LzmaOptions::new_preset(0).unwrap();
        options.dict_size(u32::try_from(dict_size).unwrap());
        let mut filters = Filters::new();
        filters.lzma2(&options);
        let stream = Stream::new_stream_encoder(&filters, Check::Crc64).unwrap();
        let mut enc = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// A zstd frame with a window of 2^`window_log` bytes. Written in a streaming call, so the
    /// encoder does not know the size and keeps the window (it shrinks it to a known size).
    fn zstd_with_window(data: &[u8], window_log: u32) -> Vec<u8> {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        enc.window_log(window_log).unwrap();
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// The window a zstd frame's header declares (RFC 8878, 3.1.1.1.2).
    fn zstd_declared_window(frame: &[u8]) -> u64 {
        let descriptor = frame[5];
        assert_eq!(frame[4] & 0x20, 0, "a single-segment frame has no window");
        let exponent = u64::from(descriptor >> 3);
        let base = 1u64 << (10 + exponent);
        base + base / 8 * u64::from(descriptor & 7)
    }

    fn sample() -> Vec<u8> {
        (0..8192u32).map(|i| (i % 251) as u8).collect()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn formats_are_recognised_by_content() {
        let image: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(decoded(image.clone()), (Compression::None, image.clone()));
        assert_eq!(decoded(gzip(&image)), (Compression::Gzip, image.clone()));
        let xz = liblzma::encode_all(&image[..], 1).unwrap();
        assert_eq!(decoded(xz), (Compression::Xz, image.clone()));
        let zst = zstd::encode_all(&image[..], 1).unwrap();
        assert_eq!(decoded(zst), (Compression::Zstd, image.clone()));
        // shorter than any magic number
        assert_eq!(decoded(vec![1, 2]), (Compression::None, vec![1, 2]));
        assert_eq!(decoded(vec![]), (Compression::None, vec![]));
    }

    #[test]
    fn gzip_members_are_all_read() {
        let mut data = gzip(b"first member, ");
        data.extend(gzip(b"second member"));
        assert_eq!(decoded(data).1, b"first member, second member".to_vec());
    }

    #[test]
    fn xz_streams_and_zstd_frames_are_all_read() {
        let mut xz = liblzma::encode_all(&b"first stream, "[..], 1).unwrap();
        xz.extend(xz_with_dictionary(b"second stream", 8 * MIB));
        assert_eq!(decoded(xz).1, b"first stream, second stream".to_vec());
        let mut zst = zstd::encode_all(&b"first frame, "[..], 1).unwrap();
        zst.extend(zstd_with_window(b"second frame", 20));
        assert_eq!(decoded(zst).1, b"first frame, second frame".to_vec());
    }

    #[test]
    fn an_xz_dictionary_over_the_limit_fails_before_any_output() {
        let image = sample();
        let limit = 32 * MIB;
        // The header asks for 512 MiB; the data is a few KiB.
        let hostile = xz_with_dictionary(&image, 512 * MIB);
        assert!(hostile.len() < 4096);
        let over = first_read_fails(hostile.clone(), limit);
        assert_eq!(over.compression, Compression::Xz);
        assert_eq!(over.limit, limit);
        assert_eq!(
            over.to_string(),
            "the xz data needs more than 33554432 bytes of memory to decompress"
        );
        // liblzma counts its own few dozen KiB beside the dictionary: a dictionary of exactly
        // the limit is over it too.
        first_read_fails(xz_with_dictionary(&image, limit), limit);
        // Under the limit, and the hostile stream under a limit raised above it, decode.
        let fitting = xz_with_dictionary(&image, 16 * MIB);
        assert_eq!(
            decoded_within(fitting, limit).unwrap(),
            (Compression::Xz, image.clone())
        );
        assert_eq!(
            decoded_within(hostile, 600 * MIB).unwrap(),
            (Compression::Xz, image)
        );
    }

    #[test]
    fn an_xz_stream_over_the_limit_after_one_within_it_stops_there() {
        let limit = 32 * MIB;
        let mut data = xz_with_dictionary(b"fine", MIB);
        data.extend(xz_with_dictionary(b"hostile", 64 * MIB));
        let (_, mut reader) = open(io::Cursor::new(data), limit, PADDING).unwrap();
        let mut out = Vec::new();
        let err = reader.read_to_end(&mut out).unwrap_err();
        assert!(err.get_ref().unwrap().is::<MemoryLimitExceeded>(), "{err}");
        // liblzma may decode the first stream and fail on the second's header in one call,
        // whose output the reader then drops: nothing of the second stream comes out.
        assert!(b"fine".starts_with(&out), "{out:?}");
    }

    #[test]
    fn a_zstd_window_over_the_limit_fails_before_any_output() {
        let image = sample();
        let limit = 32 * MIB;
        // A window of 1 GiB; the data is a few KiB.
        let hostile = zstd_with_window(&image, 30);
        assert_eq!(zstd_declared_window(&hostile), 1 << 30);
        assert!(hostile.len() < 4096);
        let over = first_read_fails(hostile.clone(), limit);
        assert_eq!(over.compression, Compression::Zstd);
        assert_eq!(over.limit, limit);
        first_read_fails(zstd_with_window(&image, 26), limit);
        // A window of exactly the limit (a power of two) is allowed, as are smaller ones.
        for window_log in [25, 20] {
            let fitting = zstd_with_window(&image, window_log);
            assert_eq!(zstd_declared_window(&fitting), 1 << window_log);
            assert_eq!(
                decoded_within(fitting, limit).unwrap(),
                (Compression::Zstd, image.clone())
            );
        }
        assert_eq!(
            decoded_within(hostile, 1 << 30).unwrap(),
            (Compression::Zstd, image)
        );
    }

    #[test]
    fn a_zstd_frame_over_the_limit_after_one_within_it_stops_there() {
        let limit = 32 * MIB;
        let mut data = zstd_with_window(b"fine", 20);
        data.extend(zstd_with_window(b"hostile", 27));
        let (_, mut reader) = open(io::Cursor::new(data), limit, PADDING).unwrap();
        let mut out = Vec::new();
        let err = reader.read_to_end(&mut out).unwrap_err();
        assert!(err.get_ref().unwrap().is::<MemoryLimitExceeded>(), "{err}");
        assert_eq!(out, b"fine");
    }

    #[test]
    fn zstd_windows_are_limited_to_a_power_of_two_within_the_limit() {
        // The error names the window allowed.
        let over = first_read_fails(zstd_with_window(b"data", 29), 300 * MIB);
        assert_eq!(over.limit, 256 * MIB);
        assert_eq!(zstd_window_log_max(256 * MIB), 28);
        assert_eq!(zstd_window_log_max(300 * MIB), 28);
        assert_eq!(zstd_window_log_max(512 * MIB - 1), 28);
        assert_eq!(zstd_window_log_max(1), 10);
        assert_eq!(zstd_window_log_max(u64::MAX), 31);
    }

    #[test]
    fn gzip_ignores_the_limit() {
        let image = sample();
        assert_eq!(
            decoded_within(gzip(&image), 1).unwrap(),
            (Compression::Gzip, image)
        );
    }

    #[test]
    fn other_errors_are_left_alone() {
        let mut xz = liblzma::encode_all(&sample()[..], 1).unwrap();
        let middle = xz.len() / 2;
        xz[middle] ^= 0xff;
        let err = decoded_within(xz, LIMIT).unwrap_err();
        assert!(
            !err.get_ref().is_some_and(|e| e.is::<MemoryLimitExceeded>()),
            "{err}"
        );
    }

    /// A zstd skippable frame of `len` bytes of content (RFC 8878, 3.1.2).
    fn skippable_frame(len: usize) -> Vec<u8> {
        let mut frame = 0x184D_2A50u32.to_le_bytes().to_vec();
        frame.extend((len as u32).to_le_bytes());
        frame.resize(8 + len, 0xaa);
        frame
    }

    /// Reads `data` to its end under a padding bound; the error, if it stops on one.
    fn read_padded(data: Vec<u8>, max_padding: u64) -> Result<Vec<u8>, NoImageBytes> {
        let (_, mut reader) = open(io::Cursor::new(data), LIMIT, max_padding).unwrap();
        let mut out = Vec::new();
        match reader.read_to_end(&mut out) {
            Ok(_) => Ok(out),
            Err(err) => Err(*err
                .into_inner()
                .expect("a typed error")
                .downcast::<NoImageBytes>()
                .unwrap_or_else(|other| panic!("not a padding bound: {other}"))),
        }
    }

    /// The same image followed by `padding` bytes that decode to nothing, in each format.
    fn padded(image: &[u8], padding: usize) -> Vec<(&'static str, Vec<u8>)> {
        let mut zst = zstd::encode_all(image, 1).unwrap();
        while zst.len() < padding {
            zst.extend(skippable_frame(64 << 10));
        }
        let mut xz = liblzma::encode_all(image, 1).unwrap();
        xz.resize(xz.len() + padding, 0);
        let mut gz = gzip(image);
        let empty = gzip(b"");
        for _ in 0..padding / empty.len() {
            gz.extend(&empty);
        }
        vec![("zstd", zst), ("xz", xz), ("gzip", gz)]
    }

    #[test]
    fn input_that_decodes_to_nothing_is_bounded() {
        let image = sample();
        for (kind, data) in padded(&image, 4 * MIB as usize) {
            let err = read_padded(data.clone(), MIB).unwrap_err();
            assert_eq!(err.limit, MIB, "{kind}");
            // Unbounded, or bounded above the padding, the image comes out whole.
            assert_eq!(read_padded(data.clone(), 0).unwrap(), image, "{kind}");
            assert_eq!(read_padded(data, 8 * MIB).unwrap(), image, "{kind}");
        }
        for (kind, data) in padded(&image, (MIB / 2) as usize) {
            assert_eq!(read_padded(data, MIB).unwrap(), image, "{kind}");
        }
    }

    #[test]
    fn padding_between_frames_counts_from_the_last_image_byte() {
        // 768 KiB of skippable frames after each of three frames: each stretch is within
        // 1 MiB, all of them together are not.
        let mut zst = Vec::new();
        let mut image: Vec<u8> = Vec::new();
        for part in [&b"one, "[..], b"two, ", b"three"] {
            zst.extend(zstd::encode_all(part, 1).unwrap());
            for _ in 0..12 {
                zst.extend(skippable_frame(64 << 10));
            }
            image.extend_from_slice(part);
        }
        assert_eq!(read_padded(zst, MIB).unwrap(), image);
    }

    #[test]
    fn zeros_and_raw_data_are_image_bytes() {
        // 64 MiB of zeros compress to a few KiB: all of it is image, however little input.
        let zeros = vec![0u8; 64 * MIB as usize];
        for data in [
            zstd::encode_all(&zeros[..], 3).unwrap(),
            liblzma::encode_all(&zeros[..], 1).unwrap(),
            gzip(&zeros),
        ] {
            let out = read_padded(data, MIB).unwrap();
            assert!(out.len() == zeros.len() && out.iter().all(|&b| b == 0));
        }
        // Uncompressed data is all image, under the smallest bound allowed.
        let raw: Vec<u8> = (0..4 * MIB as u32).map(|i| (i % 253) as u8).collect();
        assert_eq!(read_padded(raw.clone(), MIB).unwrap(), raw);
    }
}
