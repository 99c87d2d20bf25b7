//! `fsmaker [--kernel K] [--initrd I] [--grub DIR] [--size SIZE] FSIMAGE DISKIMAGE`: makes a
//! root file system image bootable.
//!
//! DISKIMAGE gets an MBR with partition 1 at 1 MiB holding a sparse copy of FSIMAGE (grown to
//! fill `--size` if given), GRUB for BIOS in the boot sector and the gap before the partition,
//! and in the file system GRUB's modules, the kernel and initrd, and a `grub.cfg` booting them.
//! Everything happens on files, as an ordinary user: `grub-mkimage` builds GRUB's core image,
//! e2fsprogs change the file system in place inside the disk image (`debugfs -w`), and this
//! module does what `grub-bios-setup` would. FSIMAGE is only read. DISKIMAGE is written under a
//! temporary name and renamed when complete, so a failure leaves nothing behind.

pub mod config;
pub mod ext;
pub mod grub;
pub mod tool;

use std::fs::File;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use self::config::Kernel;
use self::ext::{ExtImage, Step, Superblock};
use super::device::{self, Kind, describe};
use super::partition::{self, MbrEntry, PartitionTable, SECTOR};
use crate::size::human;
use crate::sparse::{self, SparseWriter};

pub const DEFAULT_GRUB_DIR: &str = "/usr/lib/grub/i386-pc";
/// Partition 1 starts at 1 MiB, as partitioning tools align it; GRUB's core image lives in
/// the sectors before it.
pub const PARTITION_START: u64 = 1 << 20;
const LINUX: u8 = 0x83;

#[derive(Debug, Clone)]
pub struct Options {
    pub fs_image: PathBuf,
    pub disk_image: PathBuf,
    /// Copied into the file system's /boot; otherwise the newest kernel found there is used.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    /// A GRUB i386-pc directory (default [`DEFAULT_GRUB_DIR`]).
    pub grub_dir: PathBuf,
    /// Size of DISKIMAGE; partition 1 and the file system grow to fill it.
    pub size: Option<u64>,
    /// Installed as /boot/grub/grub.cfg instead of the one fsmaker writes.
    pub config: Option<PathBuf>,
    /// Added to the kernel command line of the generated configuration.
    pub append: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FsmakerError {
    #[error("{tool} is not installed (Debian package {package})")]
    MissingTool { tool: String, package: &'static str },
    #[error("{0}")]
    Input(String),
    #[error("{tool} failed: {detail}")]
    ToolFailed { tool: String, detail: String },
    #[error("cannot {what}: {reason}")]
    Io { what: String, reason: String },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FsmakerError {
    let what = what.into();
    move |e| FsmakerError::Io {
        what,
        reason: describe(&e),
    }
}

/// Where the image's `grub.cfg` came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// The file system had one and nothing asked to change it.
    Kept,
    Generated,
    /// `--config FILE`.
    Installed(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub disk_size: u64,
    pub table: PartitionTable,
    pub kernel: Option<Kernel>,
    pub config: ConfigSource,
    /// The file system was grown to this size to fill the partition.
    pub grown_to: Option<u64>,
    pub core_image_len: usize,
    pub warnings: Vec<String>,
}

pub fn run(opts: &Options) -> Result<Summary, FsmakerError> {
    grub::check_dir(&opts.grub_dir)?;
    tool::require(&["grub-mkimage", "debugfs", "e2fsck", "resize2fs"])?;
    let fs_name = opts.fs_image.display().to_string();
    let fs_file =
        File::open(&opts.fs_image).map_err(io_error(format!("open FSIMAGE {fs_name}")))?;
    let fs_len = source_len(&fs_file).map_err(io_error(format!("open FSIMAGE {fs_name}")))?;
    let superblock = Superblock::read(&fs_file, 0)
        .map_err(io_error(format!("read FSIMAGE {fs_name}")))?
        .ok_or_else(|| {
            FsmakerError::Input(format!(
                "FSIMAGE {fs_name} is not an ext2/3/4 file system (fsmaker puts GRUB's files \
                 into it with e2fsprogs)"
            ))
        })?;
    if superblock.size() > fs_len {
        return Err(FsmakerError::Input(format!(
            "FSIMAGE {fs_name} is cut short: its file system is {} but the file only {}",
            human(superblock.size()),
            human(fs_len)
        )));
    }
    for (what, path) in [
        ("kernel", &opts.kernel),
        ("initrd", &opts.initrd),
        ("config", &opts.config),
    ] {
        if let Some(path) = path
            && !path.is_file()
        {
            return Err(FsmakerError::Input(format!(
                "the {what} {} is not a file",
                path.display()
            )));
        }
    }

    let partition_len = partition_len(opts, fs_len)?;
    let disk_size = PARTITION_START + partition_len;
    let disk_dir = match opts.disk_image.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let work = tempfile::Builder::new()
        .prefix("fsmaker-")
        .tempdir()
        .map_err(io_error("make a temporary folder"))?;
    let core = grub::core_image(&opts.grub_dir, &superblock.uuid, work.path())?;
    if core.len() as u64 > PARTITION_START - SECTOR {
        return Err(FsmakerError::Input(format!(
            "GRUB's core image ({}) does not fit before partition 1",
            human(core.len() as u64)
        )));
    }

    let disk = tempfile::Builder::new()
        .prefix(".fsmaker-")
        .suffix(".part")
        .tempfile_in(&disk_dir)
        .map_err(io_error(format!("create a file in {}", disk_dir.display())))?;
    let write_err = || io_error(format!("write {}", opts.disk_image.display()));
    // A temporary file is private (0600); the image gets the mode any new file would.
    disk.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o666 & !umask()))
        .map_err(write_err())?;
    disk.as_file().set_len(disk_size).map_err(write_err())?;

    // e2fsprogs reach the images through links in the work folder, by plain names.
    let link_in_work = |path: &Path, name: &str| {
        std::os::unix::fs::symlink(path.canonicalize()?, work.path().join(name))
    };
    let grown_to = partition_len >= superblock.size() + superblock.block_size;
    if grown_to {
        // Grown on a file of its own: resize2fs truncates a regular file to the new size
        // without regard for `?offset`, which would cut the end off the disk image.
        let grown = tempfile::Builder::new()
            .prefix(".fsmaker-fs-")
            .suffix(".part")
            .tempfile_in(&disk_dir)
            .map_err(io_error(format!("create a file in {}", disk_dir.display())))?;
        grown
            .as_file()
            .set_len(partition_len)
            .map_err(write_err())?;
        copy_fs(&fs_file, fs_len, grown.as_file(), 0).map_err(write_err())?;
        link_in_work(grown.path(), "fs").map_err(io_error("link the file system"))?;
        let fs = ExtImage {
            dir: work.path(),
            image: "fs",
            offset: 0,
        };
        fs.grow(partition_len)?;
        copy_fs(
            grown.as_file(),
            partition_len,
            disk.as_file(),
            PARTITION_START,
        )
        .map_err(write_err())?;
    } else {
        copy_fs(&fs_file, fs_len, disk.as_file(), PARTITION_START).map_err(write_err())?;
    }
    link_in_work(disk.path(), "disk").map_err(io_error("link the disk image"))?;
    let fs = ExtImage {
        dir: work.path(),
        image: "disk",
        offset: PARTITION_START,
    };
    let mut warnings = Vec::new();
    let disk_id = new_disk_id();
    let (kernel, config) = install_files(opts, &fs, work.path(), disk_id, &mut warnings)?;

    let sectors = u32::try_from(partition_len / SECTOR)
        .map_err(|_| FsmakerError::Input("an MBR partition cannot be larger than 2 TiB".into()))?;
    let entry = MbrEntry {
        bootable: true,
        type_id: LINUX,
        first_sector: (PARTITION_START / SECTOR) as u32,
        sectors,
    };
    let boot_sector =
        partition::mbr_sector(&grub::boot_code(&opts.grub_dir, 1)?, disk_id, &[entry]);
    disk.as_file()
        .write_all_at(&boot_sector, 0)
        .map_err(write_err())?;
    disk.as_file()
        .write_all_at(&core, SECTOR)
        .map_err(write_err())?;
    disk.as_file().sync_all().map_err(write_err())?;
    disk.persist(&opts.disk_image)
        .map_err(|e| io_error(format!("create {}", opts.disk_image.display()))(e.error))?;

    Ok(Summary {
        disk_size,
        table: PartitionTable::parse(&boot_sector).expect("the MBR just written"),
        kernel,
        config,
        grown_to: grown_to.then_some(partition_len),
        core_image_len: core.len(),
        warnings,
    })
}

/// The process's umask. Reading it means setting it, so it is put straight back; fsmaker is
/// single-threaded, nothing creates files in between.
fn umask() -> u32 {
    // SAFETY: umask cannot fail.
    unsafe {
        let mask = libc::umask(0o022);
        libc::umask(mask);
        mask as u32
    }
}

fn source_len(file: &File) -> std::io::Result<u64> {
    let meta = file.metadata()?;
    match Kind::of(&meta) {
        Kind::Block => device::block_device_size(file),
        _ => Ok(meta.len()),
    }
}

/// Partition 1 holds FSIMAGE, or fills `--size`.
fn partition_len(opts: &Options, fs_len: u64) -> Result<u64, FsmakerError> {
    let needed = fs_len.div_ceil(SECTOR) * SECTOR;
    let Some(size) = opts.size else {
        return Ok(needed);
    };
    let available = size.saturating_sub(PARTITION_START) / SECTOR * SECTOR;
    if available < needed {
        return Err(FsmakerError::Input(format!(
            "--size {} is too small: FSIMAGE needs {} plus 1 MiB for the boot loader",
            human(size),
            human(needed)
        )));
    }
    Ok(available)
}

/// Copies the file system sparsely to `offset` of `out`, a file of holes.
fn copy_fs(fs: &File, len: u64, out: &File, offset: u64) -> std::io::Result<()> {
    let mut out = SparseWriter::new(out.try_clone()?).exact_length();
    let mut buf = vec![0u8; 256 << 10];
    sparse::copy_extents(fs, len, &mut out, offset, &mut buf, &mut |_| {})?;
    out.finish()?;
    Ok(())
}

/// An MBR disk id: Linux names the partition `PARTUUID=<id>-01` after it.
fn new_disk_id() -> u32 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) | 1
}

/// Puts GRUB's modules, the kernel, the initrd and grub.cfg into the file system.
fn install_files(
    opts: &Options,
    fs: &ExtImage,
    work: &Path,
    disk_id: u32,
    warnings: &mut Vec<String>,
) -> Result<(Option<Kernel>, ConfigSource), FsmakerError> {
    let mut steps = vec![
        Step::mkdir("/boot"),
        Step::mkdir("/boot/grub"),
        Step::mkdir("/boot/grub/i386-pc"),
    ];
    let mut owned = vec![
        "/boot".to_string(),
        "/boot/grub".into(),
        "/boot/grub/i386-pc".into(),
    ];
    // Host files are reached through links in the work folder, so their paths need no quoting.
    let link = |target: &Path, name: &str| {
        std::os::unix::fs::symlink(
            target
                .canonicalize()
                .map_err(io_error(format!("read {}", target.display())))?,
            work.join(name),
        )
        .map_err(io_error("link a file into the work folder"))
    };
    let mut put = |steps: &mut Vec<Step>, host: &str, path: String| {
        steps.push(Step::rm(&path));
        steps.push(Step::new(format!("write {host} {path}")));
        owned.push(path);
    };

    link(&opts.grub_dir, "grub")?;
    let mut modules: Vec<String> = std::fs::read_dir(&opts.grub_dir)
        .map_err(io_error(format!("read {}", opts.grub_dir.display())))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".mod") || name.ends_with(".lst"))
        .collect();
    modules.sort();
    for name in &modules {
        let safe = config::safe_name(name);
        put(
            &mut steps,
            &format!("grub/{name}"),
            format!("/boot/grub/i386-pc/{safe}"),
        );
    }

    let mut copied_kernel = None;
    if let Some(kernel) = &opts.kernel {
        link(kernel, "kernel")?;
        let path = format!("/boot/{}", file_name(kernel));
        put(&mut steps, "kernel", path.clone());
        copied_kernel = Some(path);
    }
    let mut copied_initrd = None;
    if let Some(initrd) = &opts.initrd {
        link(initrd, "initrd")?;
        let path = format!("/boot/{}", file_name(initrd));
        put(&mut steps, "initrd", path.clone());
        copied_initrd = Some(path);
    }

    let boot_names = fs.list("/boot")?.unwrap_or_default();
    let has_config = fs
        .list("/boot/grub")?
        .is_some_and(|names| names.iter().any(|n| n == "grub.cfg"));
    let kernel = match (copied_kernel, copied_initrd) {
        (Some(path), initrd) => Some(Kernel { path, initrd }),
        (None, initrd) => {
            let found = config::newest_kernel(&boot_names);
            if found.is_some() && initrd.is_some() {
                warnings.push(
                    "--initrd without --kernel: using it with the file system's kernel".into(),
                );
            }
            found.map(|k| Kernel {
                initrd: initrd.or(k.initrd),
                ..k
            })
        }
    };
    let source = if let Some(cfg) = &opts.config {
        link(cfg, "grub.cfg")?;
        ConfigSource::Installed(cfg.clone())
    } else if has_config && opts.kernel.is_none() && opts.initrd.is_none() {
        ConfigSource::Kept
    } else {
        let partuuid = format!("{disk_id:08x}-01");
        let text = config::grub_cfg(kernel.as_ref(), &partuuid, opts.append.as_deref());
        std::fs::write(work.join("grub.cfg"), text).map_err(io_error("write grub.cfg"))?;
        ConfigSource::Generated
    };
    if source != ConfigSource::Kept {
        put(&mut steps, "grub.cfg", "/boot/grub/grub.cfg".into());
    }
    if kernel.is_none() && source == ConfigSource::Generated {
        warnings.push(
            "FSIMAGE has no kernel in /boot and none was given (--kernel): GRUB will start \
             but has nothing to boot"
                .into(),
        );
    }
    // Files written by an ordinary user would belong to them; in a root file system they
    // belong to root.
    for path in owned {
        steps.push(Step::new(format!("sif {path} uid 0")));
        steps.push(Step::new(format!("sif {path} gid 0")));
    }
    fs.change(&steps).map_err(|e| match e {
        FsmakerError::ToolFailed { detail, .. } if detail.contains("Could not allocate") => {
            FsmakerError::Input(format!(
                "the file system in FSIMAGE is full ({detail}): give DISKIMAGE a --size to \
                 grow it"
            ))
        }
        other => other,
    })?;
    Ok((kernel, source))
}

fn file_name(path: &Path) -> String {
    config::safe_name(&path.file_name().unwrap_or_default().to_string_lossy())
}
