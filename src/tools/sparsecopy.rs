//! `sparsecopy [options] SRC DST`: a block copy like dd that keeps images thin.
//!
//! SRC is a file, a block device or `-` (standard input); DST a file or block device (a
//! character device such as `/dev/null`, or `-` for standard output, also works, written in
//! order). Zero blocks become
//! holes in a file, are cleared on a block device (or skipped with `--assume-zeroed`), and a
//! file source is read only where it holds data. The copy is planned first ([`Plan::new`],
//! [`Plan::check`]): SRC's partition table is read and checked against DST before anything is
//! written, so a refusal leaves DST as it was.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::device::{self, Kind, describe};
use super::partition::{HEAD_LEN, PartitionTable, Scheme};
use crate::size::human;
use crate::sparse::{self, CopyFailure, Holes, SparseStats, SparseWriter};

/// Size of each read: large enough that system calls cost little, small enough to stay in
/// the CPU cache between the read and the zero check.
/// (`cp` uses 128 KiB; 256 KiB measured a little better here, 1 MiB and more worse.)
const CHUNK: usize = 256 << 10;

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `-` for standard input.
    pub src: PathBuf,
    pub dst: PathBuf,
    /// `-f SIZE`: the size DST is made (a file) or used up to (a device).
    pub size: Option<u64>,
    /// Write even when the partition table or SRC does not fit DST.
    pub force: bool,
    /// DST is a device known to read as zeros: zero blocks are skipped, not cleared.
    pub assume_zeroed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("cannot open SRC {path}: {reason}")]
    OpenSrc { path: String, reason: String },
    #[error("cannot read SRC {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("cannot use DST {path}: {reason}")]
    OpenDst { path: String, reason: String },
    #[error("cannot write DST {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("SRC and DST are the same file ({0})")]
    SameFile(String),
    #[error(
        "DST {path} holds {} but SRC is {}; use --force to copy only what fits",
        human(*capacity),
        human(*src_len)
    )]
    TooSmall {
        path: String,
        capacity: u64,
        src_len: u64,
    },
    #[error(
        "the {kind} partition table of SRC does not fit DST {path} ({}): {detail}; \
         use --force to write it anyway",
        human(*capacity)
    )]
    TableDoesNotFit {
        kind: &'static str,
        path: String,
        capacity: u64,
        detail: String,
    },
    #[error(
        "SRC has data beyond the end of DST {path} ({}): DST holds only the start of it; \
         use --force to cut SRC off there",
        human(*capacity)
    )]
    DataBeyondEnd { path: String, capacity: u64 },
    #[error("-f {} is larger than the block device {path} ({})", human(*size), human(*device))]
    SizeBeyondDevice {
        path: String,
        size: u64,
        device: u64,
    },
}

enum Source {
    File {
        file: File,
        len: u64,
    },
    /// Standard input, a pipe or a character device: `head` was read already.
    Stream {
        reader: Box<dyn Read>,
        head: Vec<u8>,
    },
}

enum Target {
    /// DST does not exist yet: made by the copy, removed if the copy fails.
    NewFile,
    /// An existing file, truncated like `cp` does.
    File,
    Block(File),
    /// A character device or pipe: written in order, zeros included.
    Stream,
    /// `-`: standard output, like a pipe.
    Stdout,
}

/// A copy that has been checked and can run.
pub struct Plan {
    opts: Options,
    source: Source,
    target: Target,
    /// SRC's size when it is known before reading (files and block devices).
    pub src_len: Option<u64>,
    /// How much DST can hold, when it is bounded (a block device, or `-f`).
    pub capacity: Option<u64>,
    pub table: Option<PartitionTable>,
    /// Things the user should know that do not stop the copy.
    pub warnings: Vec<String>,
}

/// What a copy did.
#[derive(Debug, Clone)]
pub struct Report {
    /// Bytes of SRC copied.
    pub copied: u64,
    pub stats: SparseStats,
    /// DST's size afterwards (its length for a file; the part written for a device).
    pub dst_len: u64,
    pub notes: Vec<String>,
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

impl Plan {
    /// Opens SRC, reads its partition table and looks at DST, changing nothing.
    /// [`Plan::check`] then says whether the copy may go ahead.
    pub fn new(opts: &Options) -> Result<Plan, CopyError> {
        let src_name = shown(&opts.src);
        let open_src = |reason: String| CopyError::OpenSrc {
            path: src_name.clone(),
            reason,
        };
        let read_err = |e: io::Error| CopyError::Read {
            path: src_name.clone(),
            reason: describe(&e),
        };
        let mut source = if opts.src.as_os_str() == "-" {
            Source::Stream {
                reader: Box::new(io::stdin()),
                head: Vec::new(),
            }
        } else {
            let file = File::open(&opts.src).map_err(|e| open_src(describe(&e)))?;
            let meta = file.metadata().map_err(|e| open_src(describe(&e)))?;
            match Kind::of(&meta) {
                Kind::Regular => Source::File {
                    len: meta.len(),
                    file,
                },
                Kind::Block => Source::File {
                    len: device::block_device_size(&file).map_err(|e| open_src(describe(&e)))?,
                    file,
                },
                Kind::Stream => Source::Stream {
                    reader: Box::new(file),
                    head: Vec::new(),
                },
                Kind::Directory => return Err(open_src("it is a directory".into())),
            }
        };
        let (src_len, head) = match &mut source {
            Source::File { file, len } => (Some(*len), read_head(file).map_err(read_err)?),
            Source::Stream { reader, head } => {
                let mut buf = vec![0u8; HEAD_LEN];
                let n = fill(reader.as_mut(), &mut buf).map_err(read_err)?;
                buf.truncate(n);
                *head = buf;
                (None, head.clone())
            }
        };
        let table = PartitionTable::parse(&head);

        let (target, device_size) = look_at_dst(opts, &source)?;
        let dst_name = shown(&opts.dst);
        let capacity = match (device_size, opts.size) {
            (Some(device), Some(size)) if size > device => {
                return Err(CopyError::SizeBeyondDevice {
                    path: dst_name,
                    size,
                    device,
                });
            }
            (device, size) => size.or(device),
        };

        Ok(Plan {
            opts: opts.clone(),
            source,
            target,
            src_len,
            capacity,
            table,
            warnings: Vec::new(),
        })
    }

    /// Checks that SRC and its partition table fit DST; what does not stop the copy goes to
    /// `warnings`. With `--force` nothing stops it.
    pub fn check(&mut self) -> Result<(), CopyError> {
        let dst_name = shown(&self.opts.dst);
        let (capacity, force) = (self.capacity, self.opts.force);
        let warnings = &mut self.warnings;
        if let (Some(table), Some(capacity)) = (&self.table, capacity) {
            if let Some(detail) = table.overhang(capacity) {
                if !force {
                    return Err(CopyError::TableDoesNotFit {
                        kind: table.kind(),
                        path: dst_name,
                        capacity,
                        detail,
                    });
                }
                warnings.push(format!(
                    "the partition table does not fit DST ({detail}); writing it anyway"
                ));
            } else if matches!(table.scheme, Scheme::Gpt { .. }) && capacity > table.required_size()
            {
                warnings.push(
                    "DST is larger than the disk this GPT was made for: its backup header \
                     will not be at the end of DST (`sgdisk -e DST` moves it there)"
                        .into(),
                );
            }
        }
        if let (Some(len), Some(capacity)) = (self.src_len, capacity)
            && len > capacity
        {
            if !force {
                return Err(CopyError::TooSmall {
                    path: dst_name,
                    capacity,
                    src_len: len,
                });
            }
            warnings.push(format!(
                "copying only the first {} of SRC ({}): that is all DST holds",
                human(capacity),
                human(len)
            ));
        }
        Ok(())
    }

    /// Copies. `progress` hears how many bytes of SRC have been copied, now and then.
    pub fn execute(self, progress: &mut dyn FnMut(u64)) -> Result<Report, CopyError> {
        let made_new = matches!(self.target, Target::NewFile);
        let dst = self.opts.dst.clone();
        let result = self.copy(progress);
        if result.is_err() && made_new {
            let _ = fs::remove_file(&dst);
        }
        result
    }

    fn copy(self, progress: &mut dyn FnMut(u64)) -> Result<Report, CopyError> {
        let opts = self.opts;
        let (src_name, dst_name) = (shown(&opts.src), shown(&opts.dst));
        let read_err = |e: io::Error| CopyError::Read {
            path: src_name.clone(),
            reason: describe(&e),
        };
        let write_err = |e: io::Error| CopyError::Write {
            path: dst_name.clone(),
            reason: describe(&e),
        };
        let (file, holes, is_file) = match self.target {
            Target::NewFile | Target::File => {
                let file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&opts.dst)
                    .map_err(|e| CopyError::OpenDst {
                        path: dst_name.clone(),
                        reason: describe(&e),
                    })?;
                (file, Holes::Leave, true)
            }
            Target::Block(file) if opts.assume_zeroed => (file, Holes::Leave, false),
            Target::Block(file) => (file, Holes::Clear, false),
            Target::Stream => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&opts.dst)
                    .map_err(|e| CopyError::OpenDst {
                        path: dst_name.clone(),
                        reason: describe(&e),
                    })?;
                (file, Holes::Write, false)
            }
            Target::Stdout => {
                let fd = io::stdout()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(write_err)?;
                (File::from(fd), Holes::Write, false)
            }
        };
        let is_block = holes != Holes::Write && !is_file;
        let mut out = SparseWriter::with_holes(file, holes).exact_length();
        let mut buf = vec![0u8; CHUNK];
        let mut notes = Vec::new();

        let copied = match self.source {
            Source::File { file, len } => {
                let len = self.capacity.map_or(len, |c| len.min(c));
                sparse::copy_extents(&file, len, &mut out, 0, &mut buf, progress).map_err(
                    |failure| match failure {
                        CopyFailure::Read(e) => read_err(e),
                        CopyFailure::Write(e) => write_err(e),
                    },
                )?;
                out.skip_to(len).map_err(write_err)?;
                len
            }
            Source::Stream { mut reader, head } => {
                let mut stream = StreamCopy {
                    out: &mut out,
                    capacity: self.capacity,
                    force: opts.force,
                    beyond: false,
                };
                let mut done = stream.feed(&head).map_err(write_err)?;
                progress(stream.out.position());
                while !done {
                    let n = fill(reader.as_mut(), &mut buf).map_err(read_err)?;
                    if n == 0 {
                        break;
                    }
                    done = stream.feed(&buf[..n]).map_err(write_err)?;
                    progress(stream.out.position());
                }
                if stream.beyond && !opts.force {
                    return Err(CopyError::DataBeyondEnd {
                        path: dst_name.clone(),
                        capacity: self.capacity.unwrap_or_default(),
                    });
                }
                if stream.beyond {
                    notes.push(format!(
                        "SRC went on beyond {}: cut off there (--force)",
                        human(self.capacity.unwrap_or_default())
                    ));
                }
                stream.out.position()
            }
        };
        // A device (or stream) is used up to -f SIZE: what SRC did not fill becomes zeros.
        if let Some(size) = opts.size
            && !is_file
        {
            out.skip_to(size).map_err(write_err)?;
        }
        let dst_len = out.position();
        let (file, stats) = out.finish().map_err(write_err)?;
        if is_file {
            file.set_len(opts.size.unwrap_or(copied))
                .map_err(write_err)?;
        }
        if is_block {
            file.sync_all().map_err(write_err)?;
            match device::reread_partition_table(&file) {
                Ok(()) => notes.push(format!(
                    "the kernel re-read the partition table of {dst_name}"
                )),
                // A partition, or a device without partitions: nothing to re-read.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => notes.push(format!(
                    "could not make the kernel re-read the partition table of {dst_name} ({}); \
                     run `blockdev --rereadpt {dst_name}` when it is no longer in use",
                    describe(&e)
                )),
            }
        }
        Ok(Report {
            copied,
            stats,
            dst_len: if is_file {
                opts.size.unwrap_or(copied)
            } else {
                dst_len
            },
            notes,
        })
    }
}

/// Decides what DST is without changing it: a refused copy must leave it as it was.
fn look_at_dst(opts: &Options, source: &Source) -> Result<(Target, Option<u64>), CopyError> {
    let dst_name = shown(&opts.dst);
    let open_dst = |reason: String| CopyError::OpenDst {
        path: dst_name.clone(),
        reason,
    };
    if opts.dst.as_os_str() == "-" {
        return Ok((Target::Stdout, None));
    }
    let meta = match fs::metadata(&opts.dst) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Target::NewFile, None)),
        Err(e) => return Err(open_dst(describe(&e))),
    };
    if let Source::File { file, .. } = source
        && let Ok(src_meta) = file.metadata()
        && (src_meta.dev(), src_meta.ino()) == (meta.dev(), meta.ino())
        && Kind::of(&meta) != Kind::Stream
    {
        return Err(CopyError::SameFile(dst_name));
    }
    match Kind::of(&meta) {
        Kind::Regular => Ok((Target::File, None)),
        Kind::Stream => Ok((Target::Stream, None)),
        Kind::Directory => Err(open_dst("it is a directory".into())),
        Kind::Block => {
            // O_EXCL on a block device fails while it is mounted or otherwise claimed.
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_EXCL)
                .open(&opts.dst)
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::EBUSY) => open_dst("it is in use (mounted?)".into()),
                    _ => open_dst(describe(&e)),
                })?;
            let size = device::block_device_size(&file).map_err(|e| open_dst(describe(&e)))?;
            Ok((Target::Block(file), Some(size)))
        }
    }
}

/// Reads the start of a file or device for its partition table.
fn read_head(file: &File) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; HEAD_LEN];
    let mut n = 0;
    while n < head.len() {
        match file.read_at(&mut head[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(n);
    Ok(head)
}

/// Reads until `buf` is full or the input ends: a pipe gives 64 KiB at a time, and fewer,
/// larger writes are what make the copy fast.
fn fill(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A stream copied into DST, which may be smaller than it: zeros beyond DST's end are
/// harmless (an image padded with zeros), data there is not.
struct StreamCopy<'a> {
    out: &'a mut SparseWriter,
    capacity: Option<u64>,
    force: bool,
    /// SRC had data beyond DST's end.
    beyond: bool,
}

impl StreamCopy<'_> {
    /// Writes what fits; `Ok(true)` when reading can stop.
    fn feed(&mut self, data: &[u8]) -> io::Result<bool> {
        let room = self
            .capacity
            .map_or(u64::MAX, |c| c.saturating_sub(self.out.position()));
        if data.len() as u64 <= room {
            self.out.write(data)?;
            return Ok(false);
        }
        let (fits, rest) = data.split_at(room as usize);
        self.out.write(fits)?;
        if !sparse::is_zero(rest) {
            self.beyond = true;
        }
        Ok(self.beyond || self.force)
    }
}

impl Report {
    /// The closing line: `copied 1.0 GiB: 64.0 MiB written, 960.0 MiB of zeros skipped`.
    pub fn summary(&self) -> String {
        format!(
            "copied {} ({} bytes): {} written, {} of zeros not written",
            human(self.copied),
            self.copied,
            human(self.stats.bytes_written),
            human(self.stats.bytes_skipped),
        )
    }
}
