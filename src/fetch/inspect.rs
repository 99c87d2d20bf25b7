//! The image inspector: what format a fetched image is, by its bytes (never its name), and
//! whether it is safe to hand to `qemu-img convert`.
//!
//! A disk image format is a program of sorts: a qcow2 header may name a backing file or an
//! external data file (`/etc/passwd`, another customer's volume) that the converter would
//! read into the customer's disk (Glance's OSSA-2024-001); a VMDK descriptor may name extents
//! in other files; tables may point outside the file or claim a virtual size far beyond the
//! disk. The inspector reads the headers and tables itself and refuses, with a reason, any
//! image that is not one self-contained file of a format it knows, whose virtual size fits
//! the disk, and whose header agrees with its body:
//!
//! - **qcow2** (v2, v3): no backing file, no external data file (feature bit or header
//!   extension), no encryption, no unknown incompatible feature, not marked corrupt; the L1
//!   table large enough for the virtual size; the L1, L2 and refcount tables and every data
//!   cluster (compressed ones included) inside the file.
//! - **VMDK**: a monolithic sparse or stream-optimized file (`KDMV`) whose embedded descriptor
//!   names exactly one `SPARSE` extent (the file itself, a bare name), no parent, and the same
//!   capacity as the header; grain directory and tables inside the file. Descriptor files
//!   (extents in other files) and the old `COWD` format are refused.
//! - **VHD**: dynamic (footer copies at both ends, identical, checksums right, a sparse header
//!   whose block table lies in the file and covers the size) or fixed (raw data and a footer
//!   at the end whose checksum is right and whose size is the data's). Differencing VHDs
//!   (a parent) are refused.
//! - **VHDX**: the region table's regions in the file and none unknown but required; the
//!   metadata's items known or optional; no parent (differencing disk).
//! - A file that two formats claim (a qcow2 that is also an ISO 9660 image, an image that
//!   ends with a valid VHD footer) is refused: one reader could see one disk, another another.
//!
//! It works on any [`Bytes`]: the first buffer of the decompressed stream, to refuse early
//! ([`check_head`]: what the header alone says), then the staged file ([`inspect`]).

use std::io;
use std::os::unix::fs::FileExt;

/// An image format FetchDisk recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Raw,
    Iso,
    Qcow2,
    Vmdk,
    Vhd,
    Vhdx,
}

impl ImageFormat {
    /// The name `GetDisk` and `ListImages` show as `source_format`.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Iso => "iso",
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Vmdk => "vmdk",
            ImageFormat::Vhd => "vhd",
            ImageFormat::Vhdx => "vhdx",
        }
    }

    /// `qemu-img`'s name of the format (`-f`), for the formats that are converted.
    pub fn qemu_driver(self) -> Option<&'static str> {
        match self {
            ImageFormat::Raw | ImageFormat::Iso => None,
            ImageFormat::Qcow2 => Some("qcow2"),
            ImageFormat::Vmdk => Some("vmdk"),
            ImageFormat::Vhd => Some("vpc"),
            ImageFormat::Vhdx => Some("vhdx"),
        }
    }

    /// Whether the file holds tables besides the disk's data (it may then be somewhat larger
    /// than the disk it describes).
    pub fn is_container(self) -> bool {
        self.qemu_driver().is_some()
    }
}

/// Random access to an image's bytes.
pub trait Bytes {
    /// Reads into `buf` from `offset`; returns how much was read (short at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl Bytes for &[u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

impl Bytes for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match FileExt::read_at(self, &mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

/// What the inspector found in a whole image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub format: ImageFormat,
    /// The size of the disk the image describes.
    pub virtual_size: u64,
    /// At most this many bytes of data come out of converting it (allocated clusters, grains
    /// or blocks): what conversion may need on disk.
    pub data_bound: u64,
    /// A fixed VHD: the disk is the file's first `virtual_size` bytes as they are.
    pub fixed_vhd: bool,
}

/// Why an image is refused (`UNSAFE_IMAGE`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsafe(pub String);

/// Why the inspection stopped.
enum Stop {
    Unsafe(String),
    /// Only a head was given, and this needs more of the file: nothing to say yet.
    Short,
    Io(io::Error),
}

type R<T> = Result<T, Stop>;

fn refuse<T>(reason: impl Into<String>) -> R<T> {
    Err(Stop::Unsafe(reason.into()))
}

/// Where the ISO 9660 volume descriptor says `CD001`.
const ISO_MAGIC_AT: usize = 32_769;
/// Bytes read for detection.
const HEAD: usize = 64 << 10;
/// The most of a table read at once, and the largest table accepted (qemu's own limit on an
/// L1 table).
const MAX_TABLE: u64 = 32 << 20;
const MIB: u64 = 1 << 20;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The format the first bytes of an image announce (a fixed VHD, whose footer is at the end,
/// reads as raw here).
pub fn detect(head: &[u8]) -> ImageFormat {
    let starts = |magic: &[u8]| head.starts_with(magic);
    if starts(b"QFI\xfb") {
        ImageFormat::Qcow2
    } else if starts(b"KDMV") || starts(b"COWD") || starts(b"# Disk DescriptorFile") {
        ImageFormat::Vmdk
    } else if starts(b"conectix") {
        ImageFormat::Vhd
    } else if starts(b"vhdxfile") {
        ImageFormat::Vhdx
    } else if is_iso(head) {
        ImageFormat::Iso
    } else {
        ImageFormat::Raw
    }
}

fn is_iso(head: &[u8]) -> bool {
    head.get(ISO_MAGIC_AT..ISO_MAGIC_AT + 5) == Some(b"CD001")
}

/// What the first bytes of the stream (`head`, the start of the decompressed image) say: its
/// format, or why it is refused already (a backing file, an unknown feature, a virtual size
/// beyond `max_size`, ...). What needs the rest of the file is left to [`inspect`].
pub fn check_head(head: &[u8], max_size: u64) -> Result<ImageFormat, Unsafe> {
    let format = detect(head);
    let inspector = Inspector {
        src: &head,
        len: None,
        max_size,
    };
    match inspector.format(format) {
        Ok(_) | Err(Stop::Short) | Err(Stop::Io(_)) => Ok(format),
        Err(Stop::Unsafe(reason)) => Err(Unsafe(reason)),
    }
}

/// Inspects a whole image of `len` bytes (the staged file): its format, virtual size and
/// data, or why it is refused. `max_size` is the disk's size.
pub fn inspect(src: &dyn Bytes, len: u64, max_size: u64) -> io::Result<Result<Inspected, Unsafe>> {
    let inspector = Inspector {
        src,
        len: Some(len),
        max_size,
    };
    match inspector.whole() {
        Ok(inspected) => Ok(Ok(inspected)),
        Err(Stop::Unsafe(reason)) => Ok(Err(Unsafe(reason))),
        Err(Stop::Io(e)) => Err(e),
        // A complete file never reads short: reads past its end are refused.
        Err(Stop::Short) => Ok(Err(Unsafe("the file is truncated".into()))),
    }
}

struct Inspector<'a> {
    src: &'a dyn Bytes,
    /// The file's length; `None` when only its head is known.
    len: Option<u64>,
    max_size: u64,
}

fn size_text(bytes: u64) -> String {
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

impl Inspector<'_> {
    /// Reads `n` bytes at `offset` (part of the image's `what`).
    fn read(&self, offset: u64, n: u64, what: &str) -> R<Vec<u8>> {
        self.within(offset, n, what)?;
        let mut buf = vec![0u8; n as usize];
        let got = self.src.read_at(&mut buf, offset).map_err(Stop::Io)?;
        if got < buf.len() {
            return match self.len {
                None => Err(Stop::Short),
                Some(_) => refuse(format!("the file ends inside its {what}")),
            };
        }
        Ok(buf)
    }

    /// Refuses a `what` of `n` bytes at `offset` that does not lie inside the file.
    fn within(&self, offset: u64, n: u64, what: &str) -> R<()> {
        match (self.len, offset.checked_add(n)) {
            (_, None) => refuse(format!("its {what} lies beyond any file")),
            (Some(len), Some(end)) if end > len => refuse(format!(
                "its {what} (at byte {offset}, {n} bytes) lies outside the file of {len} bytes"
            )),
            _ => Ok(()),
        }
    }

    /// Refuses a virtual size larger than the disk.
    fn fits(&self, virtual_size: u64) -> R<()> {
        if virtual_size > self.max_size {
            return refuse(format!(
                "its virtual size ({}) is larger than the disk ({})",
                size_text(virtual_size),
                size_text(self.max_size)
            ));
        }
        Ok(())
    }

    fn whole(&self) -> R<Inspected> {
        let len = self.len.unwrap_or(0);
        let mut head = vec![0u8; HEAD.min(len as usize)];
        let got = self.src.read_at(&mut head, 0).map_err(Stop::Io)?;
        head.truncate(got);
        let format = detect(&head);
        // One format only may claim the file.
        if format != ImageFormat::Iso && is_iso(&head) {
            return refuse(format!(
                "it is both a {} image and an ISO 9660 image",
                format.name()
            ));
        }
        let tail = if len >= 1024 {
            let mut tail = vec![0u8; 512];
            self.src.read_at(&mut tail, len - 512).map_err(Stop::Io)?;
            tail.starts_with(b"conectix").then_some(tail)
        } else {
            None
        };
        if let Some(tail) = &tail
            && format != ImageFormat::Vhd
        {
            let footer = vhd_footer(tail, "footer")?;
            if format != ImageFormat::Raw {
                return refuse(format!(
                    "it is both a {} image and a VHD (it ends with a VHD footer)",
                    format.name()
                ));
            }
            return self.fixed_vhd(&footer, len);
        }
        self.format(format)
    }

    fn format(&self, format: ImageFormat) -> R<Inspected> {
        match format {
            ImageFormat::Raw | ImageFormat::Iso => {
                let len = self.len.unwrap_or(0);
                Ok(Inspected {
                    format,
                    virtual_size: len,
                    data_bound: len,
                    fixed_vhd: false,
                })
            }
            ImageFormat::Qcow2 => self.qcow2(),
            ImageFormat::Vmdk => self.vmdk(),
            ImageFormat::Vhd => self.dynamic_vhd(),
            ImageFormat::Vhdx => self.vhdx(),
        }
    }

    // ---- qcow2 ----

    fn qcow2(&self) -> R<Inspected> {
        let h = self.read(0, 104.min(self.len.unwrap_or(104)), "header")?;
        if h.len() < 72 {
            return refuse("the file ends inside its qcow2 header");
        }
        let version = be32(&h, 4);
        if version != 2 && version != 3 {
            return refuse(format!("qcow2 version {version} is not supported"));
        }
        let (backing_offset, backing_len) = (be64(&h, 8), be32(&h, 16));
        if backing_offset != 0 || backing_len != 0 {
            let name = self.qcow2_text(backing_offset, backing_len);
            return refuse(format!(
                "it names a backing file{name}: an image must stand alone"
            ));
        }
        let cluster_bits = be32(&h, 20);
        if !(9..=21).contains(&cluster_bits) {
            return refuse(format!(
                "its cluster size (2^{cluster_bits}) is out of range"
            ));
        }
        let cluster = 1u64 << cluster_bits;
        let size = be64(&h, 24);
        self.fits(size)?;
        if be32(&h, 32) != 0 {
            return refuse("it is encrypted");
        }
        let (l1_entries, l1_offset) = (be32(&h, 36) as u64, be64(&h, 40));
        let (refcount_offset, refcount_clusters) = (be64(&h, 48), be32(&h, 56) as u64);
        let (snapshots, snapshots_offset) = (be32(&h, 60) as u64, be64(&h, 64));
        let mut extended_l2 = false;
        let header_len = if version == 3 {
            if h.len() < 104 {
                return refuse("the file ends inside its qcow2 header");
            }
            let incompatible = be64(&h, 72);
            if incompatible & (1 << 2) != 0 {
                return refuse("it keeps its data in an external data file");
            }
            if incompatible & (1 << 1) != 0 {
                return refuse("it is marked corrupt");
            }
            let unknown = incompatible & !0b1_1111;
            if unknown != 0 {
                return refuse(format!(
                    "it uses unknown incompatible features ({unknown:#x})"
                ));
            }
            extended_l2 = incompatible & (1 << 4) != 0;
            if be32(&h, 96) > 6 {
                return refuse("its refcount width is out of range");
            }
            let header_len = be32(&h, 100) as u64;
            if header_len < 104 || header_len > cluster {
                return refuse("its header length is out of range");
            }
            header_len
        } else {
            72
        };
        self.qcow2_extensions(header_len, cluster)?;
        // The tables: inside the file and of sane sizes.
        let entry = if extended_l2 { 16 } else { 8 };
        let per_l2 = cluster / entry;
        let l1_needed = size.div_ceil(cluster * per_l2);
        if l1_entries < l1_needed {
            return refuse(format!(
                "its L1 table ({l1_entries} entries) cannot map its virtual size ({l1_needed} needed)"
            ));
        }
        if l1_entries * 8 > MAX_TABLE {
            return refuse("its L1 table is too large");
        }
        let aligned = |offset: u64| offset.is_multiple_of(cluster);
        if !aligned(l1_offset) || !aligned(refcount_offset) {
            return refuse("its tables are not aligned to clusters");
        }
        if l1_offset == 0 && l1_entries > 0 {
            return refuse("its L1 table overlaps its header");
        }
        if refcount_offset == 0 || refcount_clusters == 0 {
            return refuse("it has no refcount table");
        }
        if refcount_clusters * cluster > 8 * MIB {
            return refuse("its refcount table is too large");
        }
        self.within(l1_offset, l1_entries * 8, "L1 table")?;
        self.within(
            refcount_offset,
            refcount_clusters * cluster,
            "refcount table",
        )?;
        if snapshots > 0 {
            // Each snapshot's entry is at least 40 bytes.
            self.within(snapshots_offset, snapshots * 40, "snapshot table")?;
        }
        let Some(len) = self.len else {
            return Ok(self.partial(ImageFormat::Qcow2, size));
        };
        // Every L2 table and data cluster the active L1 table reaches lies in the file.
        let mut data = 0u64;
        let compressed_shift = 62 - (cluster_bits as u64 - 8);
        for (at, l1) in self.table(l1_offset, l1_entries * 8, "L1 table", 8, be64)? {
            let l2_offset = l1 & 0x00ff_ffff_ffff_fe00;
            if l2_offset == 0 {
                continue;
            }
            if !aligned(l2_offset) {
                return refuse(format!("L1 entry {at} points at an unaligned L2 table"));
            }
            let l2 = self.read(l2_offset, cluster, "L2 table")?;
            for e in l2.chunks_exact(entry as usize) {
                let e = be64(e, 0);
                if e & (1 << 62) != 0 {
                    let host = e & ((1u64 << compressed_shift) - 1);
                    if host >= len {
                        return refuse(format!(
                            "a compressed cluster (at byte {host}) lies outside the file of {len} bytes"
                        ));
                    }
                    data += cluster;
                } else {
                    let host = e & 0x00ff_ffff_ffff_fe00;
                    if host != 0 {
                        if !aligned(host) {
                            return refuse("a data cluster is not aligned");
                        }
                        if host >= len {
                            return refuse(format!(
                                "a data cluster (at byte {host}) lies outside the file of {len} bytes"
                            ));
                        }
                        data += cluster;
                    }
                }
            }
        }
        Ok(Inspected {
            format: ImageFormat::Qcow2,
            virtual_size: size,
            data_bound: data.min(size),
            fixed_vhd: false,
        })
    }

    /// A name a qcow2 header points at, for the message (best effort, printable, short).
    fn qcow2_text(&self, offset: u64, len: u32) -> String {
        let n = (len as usize).min(256);
        let mut buf = vec![0u8; n];
        match self.src.read_at(&mut buf, offset) {
            Ok(got) if got == n && n > 0 => {
                let text: String = String::from_utf8_lossy(&buf)
                    .chars()
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect();
                format!(" ({text:?})")
            }
            _ => String::new(),
        }
    }

    /// The header extensions, in the first cluster after the header.
    fn qcow2_extensions(&self, header_len: u64, cluster: u64) -> R<()> {
        let mut at = header_len;
        while at + 8 <= cluster {
            let h = self.read(at, 8, "header extensions")?;
            let (kind, len) = (be32(&h, 0), be32(&h, 4) as u64);
            match kind {
                0 => return Ok(()),
                0x4441_5441 => {
                    let name = self.qcow2_text(at + 8, len as u32);
                    return refuse(format!("it names an external data file{name}"));
                }
                0x0537_be77 => return refuse("it is encrypted"),
                _ => {}
            }
            at += 8 + len.div_ceil(8) * 8;
        }
        if at > cluster {
            return refuse("its header extensions run past its first cluster");
        }
        Ok(())
    }

    /// A table's entries (`width` bytes, read by `value`) with their indexes, read in pieces.
    fn table(
        &self,
        offset: u64,
        bytes: u64,
        what: &str,
        width: u64,
        value: fn(&[u8], usize) -> u64,
    ) -> R<Vec<(u64, u64)>> {
        if bytes > MAX_TABLE {
            return refuse(format!("its {what} is too large"));
        }
        self.within(offset, bytes, what)?;
        let raw = self.read(offset, bytes, what)?;
        Ok(raw
            .chunks_exact(width as usize)
            .enumerate()
            .map(|(i, e)| (i as u64, value(e, 0)))
            .filter(|(_, e)| *e != 0)
            .collect())
    }

    /// What is known from a head only.
    fn partial(&self, format: ImageFormat, virtual_size: u64) -> Inspected {
        Inspected {
            format,
            virtual_size,
            data_bound: virtual_size,
            fixed_vhd: false,
        }
    }

    // ---- VMDK ----

    fn vmdk(&self) -> R<Inspected> {
        let first = self.read(0, 4, "header")?;
        if first == b"COWD" {
            return refuse(
                "it is an old VMDK (COWD); only monolithic sparse and stream-optimized VMDK are accepted",
            );
        }
        if first != b"KDMV" {
            return refuse(
                "it is a VMDK descriptor, whose data lies in other files; only monolithic sparse \
                 and stream-optimized VMDK (one file) are accepted",
            );
        }
        let mut h = self.read(0, 512, "header")?;
        let version = le32(&h, 4);
        if !(1..=3).contains(&version) {
            return refuse(format!("VMDK version {version} is not supported"));
        }
        let capacity = le64(&h, 12);
        let Some(virtual_size) = capacity.checked_mul(512) else {
            return refuse("its capacity is out of range");
        };
        self.fits(virtual_size)?;
        let (descriptor_at, descriptor_sectors) = (le64(&h, 28), le64(&h, 36));
        if descriptor_at == 0 || descriptor_sectors == 0 {
            return refuse("it has no embedded descriptor");
        }
        if descriptor_sectors > 2048 {
            return refuse("its descriptor is too large");
        }
        let descriptor = self.read(
            descriptor_at.saturating_mul(512),
            descriptor_sectors * 512,
            "descriptor",
        )?;
        self.vmdk_descriptor(&descriptor, capacity)?;
        if le64(&h, 56) == u64::MAX {
            // Stream-optimized: the grain directory's place is in the footer, before the
            // end-of-stream marker.
            let Some(len) = self.len else {
                return Ok(self.partial(ImageFormat::Vmdk, virtual_size));
            };
            if len < 1536 {
                return refuse("the file ends before its VMDK footer");
            }
            h = self.read(len - 1024, 512, "footer")?;
            if !h.starts_with(b"KDMV") || le64(&h, 12) != capacity {
                return refuse("its footer does not match its header");
            }
        }
        let grain = le64(&h, 20);
        if !grain.is_power_of_two() || grain > 1 << 17 {
            return refuse("its grain size is out of range");
        }
        let per_table = le32(&h, 44) as u64;
        if !(1..=512).contains(&per_table) {
            return refuse("its grain tables have an unsupported size");
        }
        let directory_at = le64(&h, 56);
        let Some(len) = self.len else {
            return Ok(self.partial(ImageFormat::Vmdk, virtual_size));
        };
        let directory_entries = capacity.div_ceil(per_table * grain);
        let mut data = 0u64;
        for (_, table) in self.table(
            directory_at.saturating_mul(512),
            directory_entries * 4,
            "grain directory",
            4,
            |b, at| le32(b, at) as u64,
        )? {
            for (_, grain_at) in
                self.table(table * 512, per_table * 4, "grain table", 4, |b, at| {
                    le32(b, at) as u64
                })?
            {
                // 1 is a grain of zeros.
                if grain_at > 1 {
                    if grain_at.saturating_mul(512) >= len {
                        return refuse(format!(
                            "a grain (at sector {grain_at}) lies outside the file of {len} bytes"
                        ));
                    }
                    data += grain * 512;
                }
            }
        }
        Ok(Inspected {
            format: ImageFormat::Vmdk,
            virtual_size,
            data_bound: data.min(virtual_size),
            fixed_vhd: false,
        })
    }

    fn vmdk_descriptor(&self, raw: &[u8], capacity: u64) -> R<()> {
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let text = String::from_utf8_lossy(&raw[..end]);
        let mut create_type = None;
        let mut extents = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            if let Some((key, value)) = line.split_once('=') {
                let value = value.trim().trim_matches('"');
                match key.trim() {
                    "createType" => create_type = Some(value.to_string()),
                    "parentFileNameHint" => {
                        return refuse(format!(
                            "it names a parent file ({value:?}): an image must stand alone"
                        ));
                    }
                    "parentCID" if !value.eq_ignore_ascii_case("ffffffff") => {
                        return refuse("it is a delta of another disk (parentCID)");
                    }
                    _ => {}
                }
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or("");
            if ["RW", "RDONLY", "NOACCESS"].contains(&first) {
                extents.push(line.to_string());
            }
        }
        match create_type.as_deref() {
            Some("monolithicSparse" | "streamOptimized") => {}
            Some(other) => {
                return refuse(format!(
                    "its type is {other:?}; only monolithicSparse and streamOptimized VMDK are \
                     accepted"
                ));
            }
            None => return refuse("its descriptor has no createType"),
        }
        let [extent] = extents.as_slice() else {
            return refuse(format!(
                "its descriptor names {} extents; only the one in the file itself is accepted",
                extents.len()
            ));
        };
        let (before, rest) = extent.split_once('"').unwrap_or((extent, ""));
        let name = rest.split('"').next().unwrap_or("");
        let fields: Vec<&str> = before.split_whitespace().collect();
        if fields.len() != 3 || fields[2] != "SPARSE" {
            return refuse(format!(
                "its extent ({extent:?}) is not the file's own sparse extent"
            ));
        }
        if name.is_empty() || name.contains(['/', '\\']) || name.contains("..") {
            return refuse(format!("its extent names another file ({name:?})"));
        }
        if fields[1].parse::<u64>().ok() != Some(capacity) {
            return refuse(format!(
                "its descriptor says {} sectors, its header {capacity}",
                fields[1]
            ));
        }
        Ok(())
    }

    // ---- VHD ----

    fn dynamic_vhd(&self) -> R<Inspected> {
        let head = self.read(0, 512, "footer copy")?;
        let footer = vhd_footer(&head, "footer copy")?;
        match footer.disk_type {
            3 => {}
            4 => return refuse("it is a differencing VHD, which names a parent disk"),
            2 => return refuse("a fixed VHD's footer is at its start"),
            t => return refuse(format!("its VHD disk type ({t}) is unknown")),
        }
        self.fits(footer.virtual_size())?;
        let Some(len) = self.len else {
            return Ok(self.partial(ImageFormat::Vhd, footer.virtual_size()));
        };
        if len < 1536 {
            return refuse("the file ends before its VHD footer");
        }
        if self.read(len - 512, 512, "footer")? != head {
            return refuse("its footer differs from the copy at its start");
        }
        let header = self.read(footer.data_offset, 1024, "dynamic disk header")?;
        if !header.starts_with(b"cxsparse") {
            return refuse("its dynamic disk header is missing");
        }
        let mut zeroed = header.clone();
        zeroed[36..40].fill(0);
        if !ones_complement(&zeroed) != be32(&header, 36) {
            return refuse("its dynamic disk header's checksum is wrong");
        }
        let (table_at, entries, block) = (
            be64(&header, 16),
            be32(&header, 28) as u64,
            be32(&header, 32) as u64,
        );
        if !block.is_power_of_two() || !(512..=256 * MIB).contains(&block) {
            return refuse("its block size is out of range");
        }
        if entries * block < footer.current_size {
            return refuse("its block table does not cover its size");
        }
        let bitmap = (block / 512).div_ceil(8).div_ceil(512) * 512;
        let mut data = 0u64;
        for (_, sector) in self.table(table_at, entries * 4, "block table", 4, |b, at| {
            be32(b, at) as u64
        })? {
            if sector == 0xffff_ffff {
                continue;
            }
            self.within(sector * 512, bitmap, "block")?;
            data += block;
        }
        Ok(Inspected {
            format: ImageFormat::Vhd,
            virtual_size: footer.virtual_size(),
            data_bound: data.min(footer.virtual_size()),
            fixed_vhd: false,
        })
    }

    fn fixed_vhd(&self, footer: &VhdFooter, len: u64) -> R<Inspected> {
        match footer.disk_type {
            2 => {}
            3 | 4 => return refuse("it ends with a dynamic VHD footer but has no header"),
            t => return refuse(format!("its VHD disk type ({t}) is unknown")),
        }
        if footer.current_size != len - 512 {
            return refuse(format!(
                "its VHD footer says {} bytes of data, the file holds {}",
                footer.current_size,
                len - 512
            ));
        }
        self.fits(footer.current_size)?;
        Ok(Inspected {
            format: ImageFormat::Vhd,
            virtual_size: footer.current_size,
            data_bound: footer.current_size,
            fixed_vhd: true,
        })
    }

    // ---- VHDX ----

    fn vhdx(&self) -> R<Inspected> {
        const REGION_TABLE: u64 = 192 << 10;
        let bat = guid("2DC27766-F623-4200-9D64-115E9BFD4A08");
        let metadata_id = guid("8B7CA206-4790-4B9A-B8FE-575F050F886E");
        let regions = self.read(REGION_TABLE, 64 << 10, "region table")?;
        if &regions[..4] != b"regi" {
            return refuse("its region table is missing");
        }
        let count = le32(&regions, 8) as usize;
        if count > 2047 {
            return refuse("its region table is too large");
        }
        let mut metadata = None;
        for i in 0..count {
            let e = &regions[16 + 32 * i..48 + 32 * i];
            let (id, offset, length, required) =
                (&e[..16], le64(e, 16), le32(e, 24) as u64, le32(e, 28) & 1);
            self.within(offset, length, "region")?;
            if id == metadata_id {
                metadata = Some((offset, length));
            } else if id != bat && required != 0 {
                return refuse("it has a required region of an unknown kind");
            }
        }
        let Some((meta_at, meta_len)) = metadata else {
            return refuse("it has no metadata region");
        };
        if !(64 << 10..=8 * MIB).contains(&meta_len) {
            return refuse("its metadata region's size is out of range");
        }
        let meta = self.read(meta_at, meta_len, "metadata region")?;
        if &meta[..8] != b"metadata" {
            return refuse("its metadata table is missing");
        }
        let entries = le16(&meta, 10) as usize;
        if entries > 2047 {
            return refuse("its metadata table is too large");
        }
        let file_parameters = guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
        let virtual_disk_size = guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
        let parent_locator = guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C");
        let known = [
            guid("BECA12AB-B2E6-4523-93EF-C309E000C746"), // page 83 data
            guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F"), // logical sector size
            guid("CDA348C7-445D-4471-9CC9-E9885251C556"), // physical sector size
        ];
        let mut virtual_size = None;
        for i in 0..entries {
            let e = &meta[32 + 32 * i..64 + 32 * i];
            let (id, offset, length, required) = (
                &e[..16],
                le32(e, 16) as usize,
                le32(e, 20) as usize,
                le32(e, 24) & 4,
            );
            let Some(item) = meta.get(offset..offset.saturating_add(length)) else {
                return refuse("a metadata item lies outside its region");
            };
            if id == parent_locator {
                return refuse("it is a differencing VHDX, which names a parent disk");
            } else if id == file_parameters {
                if item.len() < 8 {
                    return refuse("its file parameters are truncated");
                }
                if le32(item, 4) & 2 != 0 {
                    return refuse("it is a differencing VHDX, which names a parent disk");
                }
            } else if id == virtual_disk_size {
                if item.len() < 8 {
                    return refuse("its virtual disk size is truncated");
                }
                virtual_size = Some(le64(item, 0));
            } else if !known.contains(&guid_bytes(id)) && required != 0 {
                return refuse("it has a required metadata item of an unknown kind");
            }
        }
        let Some(virtual_size) = virtual_size else {
            return refuse("it has no virtual disk size");
        };
        self.fits(virtual_size)?;
        let data_bound = virtual_size.min(self.len.unwrap_or(virtual_size));
        Ok(Inspected {
            format: ImageFormat::Vhdx,
            virtual_size,
            data_bound,
            fixed_vhd: false,
        })
    }
}

/// A VHD footer's fields.
struct VhdFooter {
    data_offset: u64,
    current_size: u64,
    /// Cylinders, heads, sectors per track.
    geometry: (u64, u64, u64),
    disk_type: u32,
}

impl VhdFooter {
    /// The larger of the sizes readers take it to have (the geometry's, or the size field).
    fn virtual_size(&self) -> u64 {
        let (c, h, s) = self.geometry;
        self.current_size.max(c * h * s * 512)
    }
}

fn ones_complement(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(0u32, |sum, &b| sum.wrapping_add(b as u32))
}

fn vhd_footer(b: &[u8], what: &str) -> R<VhdFooter> {
    if !b.starts_with(b"conectix") {
        return refuse(format!("its VHD {what} is missing"));
    }
    let mut zeroed = b[..512].to_vec();
    zeroed[64..68].fill(0);
    if !ones_complement(&zeroed) != be32(b, 64) {
        return refuse(format!("its VHD {what}'s checksum is wrong"));
    }
    Ok(VhdFooter {
        data_offset: be64(b, 16),
        current_size: be64(b, 48),
        geometry: (be16(b, 56) as u64, b[58] as u64, b[59] as u64),
        disk_type: be32(b, 60),
    })
}

/// A GUID as stored (the first three fields little-endian).
fn guid(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

fn guid_bytes(b: &[u8]) -> [u8; 16] {
    b.try_into().unwrap_or([0; 16])
}

#[cfg(test)]
mod tests;
