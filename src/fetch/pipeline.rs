//! The fetch pipeline: download → decompress → hash → thin write, each stage on its own thread,
//! joined by bounded channels so memory stays flat whatever the image size.
//!
//! The downloader (async HTTP, or a blocking FTP thread) hands network chunks to a [`Wire`].
//! The decode thread recognises the compression, inflates into 1 MiB buffers taken from a small
//! pool, stops the job as soon as the image passes the disk size, and recognises the image's
//! format by its first bytes (refusing at once what its header alone shows to be unsafe).
//! The hash thread computes the checksum (only when one was given); the write thread writes
//! the buffers thinly into the staging file, or, for a raw image when the storage offers one,
//! straight into a staging volume ([`Target`]), and gives them back to the pool. Every stage checks
//! the job's cancellation between buffers, so a cancel stops the work within a buffer; the
//! fetch stops the stages the same way when a budget runs out ([`Wire::stop`]).

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Checksum;
use super::budget::FetchBudget;
use super::decode::{self, Compression, MemoryLimitExceeded, NoImageBytes};
use super::inspect::{self, ImageFormat};
use super::source::Algorithm;
use crate::fetch::error::{FetchError, FetchResult};
use crate::progress::Progress;
use crate::sparse::{self, SparseStats, SparseWriter};

/// Size of the buffers between the decode, hash and write stages.
const CHUNK: usize = 1 << 20;
/// Buffers in flight between those stages (the pipeline's memory is about this many MiB).
const POOL: usize = 8;
/// Network chunks queued between the downloader and the decode stage.
const WIRE_QUEUE: usize = 16;
/// File bytes a container format (qcow2, VMDK, ...) may hold beyond the disk it describes
/// (its tables): an eighth of the disk and 64 MiB. Its virtual size is checked by the
/// inspector.
fn container_limit(disk_size: u64) -> u64 {
    disk_size
        .saturating_add(disk_size / 8)
        .saturating_add(64 << 20)
}

/// The downloader's end of the pipeline: forwards network chunks and counts the bytes that
/// came over the wire (what the customer is charged for).
pub struct Wire {
    tx: mpsc::Sender<Bytes>,
    pub progress: Arc<Progress>,
    received: AtomicU64,
    /// Stops the stages: fires with the job's cancellation, or alone ([`Wire::stop`]).
    stop: CancellationToken,
}

impl Wire {
    /// Stops the pipeline and the downloader (a budget ran out; the caller has the reason).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Whether the job was cancelled or the pipeline stopped: a downloader gives up.
    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// A wire into nothing, for tests of what watches it.
    #[cfg(test)]
    pub fn detached() -> Wire {
        Wire {
            tx: mpsc::channel(1).0,
            progress: Arc::default(),
            received: AtomicU64::new(0),
            stop: CancellationToken::new(),
        }
    }

    /// A token that fires when [`Wire::is_stopped`] becomes true.
    pub fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }

    /// Counts `n` bytes received from the network (forwarded or not).
    pub fn received(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn total_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Hands a chunk to the decoder; fails when the pipeline has stopped (it then has the
    /// reason).
    pub async fn send(&self, chunk: Bytes) -> Result<(), PipelineClosed> {
        self.tx.send(chunk).await.map_err(|_| PipelineClosed)
    }

    pub fn blocking_send(&self, chunk: Bytes) -> Result<(), PipelineClosed> {
        self.tx.blocking_send(chunk).map_err(|_| PipelineClosed)
    }
}

/// The pipeline stopped taking data (it failed or was cancelled; its own result says why).
#[derive(Debug)]
pub struct PipelineClosed;

/// A volume written in place (a staging image of RBD storage): the image's bytes go there with
/// no local staging file. Zero blocks are never written (it reads as zeros when made).
pub trait Volume: sparse::Destination + Send {
    /// Reads back what was written (the inspector reads the image), after
    /// [`sparse::Destination::writes_done`].
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Makes `len` bytes at `offset` read as zeros (a fixed VHD's footer is cut off).
    fn zero(&mut self, offset: u64, len: u64) -> io::Result<()>;
}

/// Makes the staging volume, of at least the given size in bytes, reading as zeros.
pub type MakeVolume = Box<dyn FnOnce(u64) -> io::Result<Box<dyn Volume>> + Send>;

/// Where the write stage puts the image.
pub enum Target {
    /// A file, made (or truncated) before the fetch started.
    File(File),
    /// A volume for a raw image or an ISO, made with the first bytes; any other image (qcow2,
    /// VMDK, VHD, VHDX, which are converted from a file) goes into the file at `file`, made
    /// then.
    Volume { make: MakeVolume, file: PathBuf },
}

/// The volume an image was streamed into, open (see [`Written::streamed`]).
pub struct Streamed(pub Box<dyn Volume>);

impl std::fmt::Debug for Streamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Streamed(volume)")
    }
}

/// What the pipeline wrote.
#[derive(Debug)]
pub struct Written {
    pub compression: Compression,
    /// Bytes of the uncompressed image.
    pub image_bytes: u64,
    /// The format: what the first bytes said, then (once [`super::fetch_image`] inspected the
    /// whole file) what the file is.
    pub format: ImageFormat,
    /// Lower-case hex of the checksum asked for, when one was.
    pub digest: Option<String>,
    pub stats: SparseStats,
    /// The volume the image went into, when it was streamed into one ([`Target::volume`]);
    /// `None` when it is in the target's file. Dropping it closes the volume.
    pub streamed: Option<Streamed>,
}

/// Why a stage stopped.
enum StageError {
    Failed(FetchError),
    /// A neighbouring stage went away; its own error is the one to report.
    PeerGone,
}

impl From<FetchError> for StageError {
    fn from(e: FetchError) -> Self {
        StageError::Failed(e)
    }
}

type StageResult<T> = Result<T, StageError>;

/// The running stages.
pub struct Stages {
    decode: JoinHandle<StageResult<(Compression, u64, ImageFormat)>>,
    hash: JoinHandle<StageResult<Option<String>>>,
    write: JoinHandle<StageResult<(SparseStats, Option<Streamed>)>>,
}

/// Starts the stages writing into `target`; returns the downloader's end and the stages. The
/// decompressor may use `decompression_memory` bytes and read at most `max_padding` bytes
/// without producing image bytes (see [`decode`]). The writer keeps `reserve` bytes of the
/// file's file system free (see [`write_stage`]).
pub fn start(
    target: Target,
    disk_size: u64,
    decompression_memory: u64,
    max_padding: u64,
    reserve: u64,
    checksum: &Checksum,
    progress: Arc<Progress>,
) -> io::Result<(Arc<Wire>, Stages)> {
    let (wire_tx, wire_rx) = mpsc::channel(WIRE_QUEUE);
    let (pool_tx, pool_rx) = sync_channel::<Vec<u8>>(POOL);
    let (decoded_tx, decoded_rx) = sync_channel::<Vec<u8>>(POOL / 2);
    let (hashed_tx, hashed_rx) = sync_channel::<Vec<u8>>(POOL / 2);
    // The stages stop when the job is cancelled, or when the fetch stops them.
    let cancel = progress.cancel_token().child_token();
    let input = ChannelReader {
        rx: wire_rx,
        current: Bytes::new(),
        cancel: cancel.clone(),
        runtime: Handle::current(),
    };
    let hasher = Hasher::new(checksum).map_err(io::Error::other)?;
    // Set by the decode stage before it passes the first buffer on.
    let format = Arc::new(OnceLock::new());
    let decode = {
        let cancel = cancel.clone();
        let format = format.clone();
        std::thread::Builder::new()
            .name("fetch-decode".into())
            .spawn(move || {
                decode_stage(
                    input,
                    disk_size,
                    decompression_memory,
                    max_padding,
                    pool_rx,
                    decoded_tx,
                    &format,
                    cancel,
                )
            })?
    };
    let hash = {
        let cancel = cancel.clone();
        std::thread::Builder::new()
            .name("fetch-hash".into())
            .spawn(move || hash_stage(hasher, decoded_rx, hashed_tx, cancel))?
    };
    let write = {
        let cancel = cancel.clone();
        std::thread::Builder::new()
            .name("fetch-write".into())
            .spawn(move || {
                write_stage(
                    target, disk_size, &format, reserve, hashed_rx, pool_tx, cancel,
                )
            })?
    };
    let wire = Arc::new(Wire {
        tx: wire_tx,
        progress,
        received: AtomicU64::new(0),
        stop: cancel,
    });
    Ok((
        wire,
        Stages {
            decode,
            hash,
            write,
        },
    ))
}

impl Stages {
    /// Waits for every stage (they end once the wire closes, a stage fails or the job is
    /// cancelled) and returns what was written, or the error that stopped them first.
    pub fn wait(self) -> FetchResult<Written> {
        let decode = joined(self.decode);
        let hash = joined(self.hash);
        let write = joined(self.write);
        match (decode, hash, write) {
            (Ok((compression, image_bytes, format)), Ok(digest), Ok((stats, streamed))) => {
                Ok(Written {
                    compression,
                    image_bytes,
                    format,
                    digest,
                    stats,
                    streamed,
                })
            }
            (decode, hash, write) => {
                let first = [decode.err(), hash.err(), write.err()]
                    .into_iter()
                    .flatten()
                    .find_map(|e| match e {
                        StageError::Failed(e) => Some(e),
                        StageError::PeerGone => None,
                    });
                Err(first.unwrap_or_else(|| {
                    FetchError::internal(anyhow::anyhow!("the fetch pipeline stopped"))
                }))
            }
        }
    }
}

fn joined<T>(stage: JoinHandle<StageResult<T>>) -> StageResult<T> {
    stage.join().unwrap_or_else(|_| {
        Err(StageError::Failed(FetchError::internal(anyhow::anyhow!(
            "a fetch pipeline thread panicked"
        ))))
    })
}

/// Reads the downloader's chunks as a byte stream; a cancelled job (or stopped pipeline) reads
/// as an error.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
    cancel: CancellationToken,
    runtime: Handle,
}

#[derive(Debug, thiserror::Error)]
#[error("the job was cancelled")]
struct CancelledRead;

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            let next = match self.rx.try_recv() {
                Ok(chunk) => Some(chunk),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    let (rx, cancel) = (&mut self.rx, &self.cancel);
                    self.runtime.block_on(async {
                        tokio::select! {
                            chunk = rx.recv() => Ok(chunk),
                            _ = cancel.cancelled() => Err(io::Error::other(CancelledRead)),
                        }
                    })?
                }
            };
            match next {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

fn cancelled(cancel: &CancellationToken) -> StageResult<()> {
    if cancel.is_cancelled() {
        Err(StageError::Failed(FetchError::Cancelled))
    } else {
        Ok(())
    }
}

fn read_error(kind: Compression, err: io::Error) -> StageError {
    let inner = err.get_ref();
    if inner.is_some_and(|inner| inner.is::<CancelledRead>()) {
        return StageError::Failed(FetchError::Cancelled);
    }
    if let Some(spent) = inner.and_then(|inner| inner.downcast_ref::<NoImageBytes>()) {
        return StageError::Failed(FetchError::from(FetchBudget::NoImageBytes {
            limit: spent.limit,
        }));
    }
    if let Some(over) = inner.and_then(|inner| inner.downcast_ref::<MemoryLimitExceeded>()) {
        return StageError::Failed(FetchError::DecompressionLimit {
            compression: over.compression.name(),
            limit: over.limit,
        });
    }
    StageError::Failed(FetchError::FetchFailed(match kind {
        Compression::None => format!("reading the image failed: {err}"),
        kind => format!("the {} data is corrupt: {err}", kind.name()),
    }))
}

/// Fills `buf` as far as the input goes; returns how much was read.
fn fill(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Takes a buffer from the pool, allocating up to [`POOL`] of them.
fn take_buffer(
    pool: &Receiver<Vec<u8>>,
    allocated: &mut usize,
    cancel: &CancellationToken,
) -> StageResult<Vec<u8>> {
    match pool.try_recv() {
        Ok(buf) => return Ok(buf),
        Err(TryRecvError::Empty) if *allocated < POOL => {
            *allocated += 1;
            return Ok(vec![0u8; CHUNK]);
        }
        Err(TryRecvError::Empty) => {}
        Err(TryRecvError::Disconnected) => return Err(StageError::PeerGone),
    }
    loop {
        cancelled(cancel)?;
        match pool.recv_timeout(Duration::from_millis(200)) {
            Ok(buf) => return Ok(buf),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Err(StageError::PeerGone),
        }
    }
}

// The stage's inputs and outputs, each its own channel or limit.
#[allow(clippy::too_many_arguments)]
fn decode_stage(
    input: ChannelReader,
    disk_size: u64,
    decompression_memory: u64,
    max_padding: u64,
    pool: Receiver<Vec<u8>>,
    out: SyncSender<Vec<u8>>,
    first_format: &OnceLock<ImageFormat>,
    cancel: CancellationToken,
) -> StageResult<(Compression, u64, ImageFormat)> {
    let (kind, mut reader) = decode::open(input, decompression_memory, max_padding)
        .map_err(|e| read_error(Compression::None, e))?;
    let mut allocated = 0;
    let mut total: u64 = 0;
    let mut format = ImageFormat::Raw;
    // A raw file may be a fixed VHD: its data and a 512-byte footer (see `inspect`). A raw
    // image larger than the disk is refused once the whole file is known.
    let mut limit = disk_size.saturating_add(512);
    loop {
        cancelled(&cancel)?;
        let mut buf = take_buffer(&pool, &mut allocated, &cancel)?;
        buf.resize(CHUNK, 0);
        let n = fill(&mut *reader, &mut buf).map_err(|e| read_error(kind, e))?;
        if n == 0 {
            break;
        }
        if total == 0 {
            // The header alone may already refuse the image (a backing file, a virtual size
            // beyond the disk): before the rest is downloaded.
            format = inspect::check_head(&buf[..n], disk_size)
                .map_err(|e| FetchError::UnsafeImage(e.0))?;
            if format.is_container() {
                limit = container_limit(disk_size);
            }
            let _ = first_format.set(format);
        }
        total += n as u64;
        if total > limit {
            return Err(FetchError::ImageTooLarge { disk_size }.into());
        }
        buf.truncate(n);
        out.send(buf).map_err(|_| StageError::PeerGone)?;
    }
    Ok((kind, total, format))
}

/// The checksum being computed, by OpenSSL: its assembly runs MD5 about twice as fast as the
/// pure-Rust crates (0.9 GB/s against 0.45 on the development machine), and uses the CPU's
/// SHA instructions for SHA-1 and SHA-256. Hashing is often the slowest stage of a fetch.
struct Hasher(Option<openssl::hash::Hasher>);

impl Hasher {
    fn new(checksum: &Checksum) -> FetchResult<Self> {
        let Checksum::Digest(algorithm, _) = checksum else {
            return Ok(Hasher(None));
        };
        use openssl::hash::MessageDigest;
        let digest = match algorithm {
            Algorithm::Md5 => MessageDigest::md5(),
            Algorithm::Sha1 => MessageDigest::sha1(),
            Algorithm::Sha256 => MessageDigest::sha256(),
            Algorithm::Sha512 => MessageDigest::sha512(),
        };
        let hasher = openssl::hash::Hasher::new(digest).map_err(FetchError::internal)?;
        Ok(Hasher(Some(hasher)))
    }

    fn update(&mut self, data: &[u8]) -> FetchResult<()> {
        if let Some(h) = &mut self.0 {
            h.update(data).map_err(FetchError::internal)?;
        }
        Ok(())
    }

    fn finish(self) -> FetchResult<Option<String>> {
        match self.0 {
            None => Ok(None),
            Some(mut h) => Ok(Some(hex::encode(h.finish().map_err(FetchError::internal)?))),
        }
    }
}

fn hash_stage(
    mut hasher: Hasher,
    input: Receiver<Vec<u8>>,
    out: SyncSender<Vec<u8>>,
    cancel: CancellationToken,
) -> StageResult<Option<String>> {
    for buf in input {
        cancelled(&cancel)?;
        hasher.update(&buf)?;
        out.send(buf).map_err(|_| StageError::PeerGone)?;
    }
    Ok(hasher.finish()?)
}

/// How many bytes the writer writes between two looks at its file system's free space: the
/// most it may take the file system below the reserve if something else fills it meanwhile.
const SPACE_CHECK_EVERY: u64 = 4 << 20;

/// The destination the write stage chose with the first buffer.
enum Writer {
    File(SparseWriter<File>),
    Volume(SparseWriter<Box<dyn Volume>>),
}

/// Bytes a raw image may take in its volume beyond the disk: a fixed VHD's footer (512) and
/// the padding of the last block.
const VOLUME_SLACK: u64 = 2 * sparse::BLOCK as u64;

impl Writer {
    /// A raw image (or ISO) streams into the volume when there is one; anything else is
    /// written into the file (made now when it was not). With a file, also the file again:
    /// what the writer looks at its file system's free space through.
    fn open(
        target: Target,
        disk_size: u64,
        format: ImageFormat,
    ) -> FetchResult<(Writer, Option<File>)> {
        let file_writer = |file: File| {
            let probe = file
                .try_clone()
                .map_err(|e| FetchError::Storage(format!("opening the staged file: {e}")))?;
            Ok((Writer::File(SparseWriter::new(file)), Some(probe)))
        };
        match target {
            Target::File(file) => file_writer(file),
            Target::Volume { make, .. } if !format.is_container() => {
                let volume = make(disk_size.saturating_add(VOLUME_SLACK)).map_err(|e| {
                    FetchError::Storage(format!("creating the staging volume: {e}"))
                })?;
                Ok((Writer::Volume(SparseWriter::new(volume)), None))
            }
            Target::Volume { file, .. } => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&file)
                    .map_err(|e| FetchError::Storage(format!("creating the staging file: {e}")))?;
                file_writer(file)
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Writer::File(w) => w.write(buf),
            Writer::Volume(w) => w.write(buf),
        }
    }

    fn finish(self) -> io::Result<(SparseStats, Option<Streamed>)> {
        match self {
            Writer::File(w) => w.finish().map(|(_, stats)| (stats, None)),
            Writer::Volume(w) => w
                .finish()
                .map(|(volume, stats)| (stats, Some(Streamed(volume)))),
        }
    }
}

/// Writes thinly into the target. Into a file, never taking its file system below `reserve`
/// bytes free: it stops with `StorageFull` before a write could, so that the node's database
/// and everything else on that file system still have room (and with `StorageFull` too when
/// the file system fills up under it anyway). A volume (an RBD image) is the pool's space,
/// not this node's.
fn write_stage(
    target: Target,
    disk_size: u64,
    format: &OnceLock<ImageFormat>,
    reserve: u64,
    input: Receiver<Vec<u8>>,
    pool: SyncSender<Vec<u8>>,
    cancel: CancellationToken,
) -> StageResult<(SparseStats, Option<Streamed>)> {
    let mut written: u64 = 0;
    let error = |written: u64| {
        move |e: io::Error| match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                FetchError::StorageFull { written, reserve }
            }
            _ => FetchError::Storage(format!("writing the image failed: {e}")),
        }
    };
    let mut input = input.into_iter();
    // No image bytes at all: nothing is made (the fetch fails as empty).
    let Some(first) = input.next() else {
        return Ok((SparseStats::default(), None));
    };
    cancelled(&cancel)?;
    let format = format.get().copied().unwrap_or(ImageFormat::Raw);
    let (mut writer, probe) = Writer::open(target, disk_size, format)?;
    let mut since_check = SPACE_CHECK_EVERY;
    for buf in std::iter::once(first).chain(input) {
        cancelled(&cancel)?;
        if let Some(probe) = probe.as_ref().filter(|_| since_check >= SPACE_CHECK_EVERY) {
            since_check = 0;
            let stats = rustix::fs::fstatvfs(probe)
                .map_err(|e| FetchError::Storage(format!("checking free space: {e}")))?;
            let free = stats.f_bavail.saturating_mul(stats.f_frsize);
            if free < reserve.saturating_add(SPACE_CHECK_EVERY) {
                return Err(FetchError::StorageFull { written, reserve }.into());
            }
        }
        writer.write(&buf).map_err(error(written))?;
        written += buf.len() as u64;
        since_check += buf.len() as u64;
        // The pool has room for every buffer; a full or closed pool just drops this one.
        let _ = pool.try_send(buf);
    }
    Ok(writer.finish().map_err(error(written))?)
}
