//! `fsmaker [options] FSIMAGE DISKIMAGE`: see `extility::tools::fsmaker`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use extility::size::{human, parse_size};
use extility::tools::fsmaker::{self, ConfigSource, DEFAULT_GRUB_DIR, Options};

/// Makes a root file system image bootable: writes DISKIMAGE with an MBR, partition 1 at 1 MiB
/// holding FSIMAGE (an ext2/3/4 image, copied sparsely), and GRUB for BIOS booting the kernel
/// and initrd. Needs no root and no loop devices; uses grub-mkimage (grub-common,
/// grub-pc-bin) and debugfs (e2fsprogs).
#[derive(Parser)]
#[command(
    name = "fsmaker",
    version,
    arg_required_else_help = true,
    after_help = "Examples:\n  sparsecopy -f2G /dev/null myfs && mkfs.ext4 -d rootdir myfs\n  \
                  fsmaker myfs myimage.img\n  \
                  fsmaker --kernel vmlinuz --initrd initrd.img --size 10G myfs myimage.img"
)]
struct Args {
    /// Kernel to copy into /boot (default: the newest /boot/vmlinuz-* of FSIMAGE)
    #[arg(long, value_name = "K")]
    kernel: Option<PathBuf>,
    /// Initrd to copy into /boot (default: the one of the kernel's version in FSIMAGE)
    #[arg(long, value_name = "I")]
    initrd: Option<PathBuf>,
    /// GRUB's i386-pc directory (boot.img, modules)
    #[arg(long, value_name = "DIR", default_value = DEFAULT_GRUB_DIR)]
    grub: PathBuf,
    /// Size of DISKIMAGE; partition 1 and its file system grow to fill it (default: just
    /// large enough)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    size: Option<u64>,
    /// grub.cfg to install (default: FSIMAGE's own /boot/grub/grub.cfg, or one fsmaker writes
    /// for the kernel)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Extra kernel command line arguments for the grub.cfg fsmaker writes
    #[arg(long, value_name = "ARGS")]
    append: Option<String>,
    /// The root file system image (ext2/3/4); it is only read
    #[arg(value_name = "FSIMAGE")]
    fs_image: PathBuf,
    /// The bootable disk image to write
    #[arg(value_name = "DISKIMAGE")]
    disk_image: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = Options {
        fs_image: args.fs_image,
        disk_image: args.disk_image,
        kernel: args.kernel,
        initrd: args.initrd,
        grub_dir: args.grub,
        size: args.size,
        config: args.config,
        append: args.append,
    };
    match fsmaker::run(&options) {
        Ok(summary) => {
            for warning in &summary.warnings {
                eprintln!("fsmaker: warning: {warning}");
            }
            eprint!(
                "{}: {}, {}",
                options.disk_image.display(),
                human(summary.disk_size),
                summary.table
            );
            if let Some(size) = summary.grown_to {
                eprintln!("file system: grown to {}", human(size));
            }
            let kernel = match &summary.kernel {
                Some(k) => match &k.initrd {
                    Some(initrd) => format!("booting {} with {initrd}", k.path),
                    None => format!("booting {}", k.path),
                },
                None => "with no kernel to boot".to_string(),
            };
            let config = match &summary.config {
                ConfigSource::Kept => "kept from FSIMAGE".to_string(),
                ConfigSource::Generated => format!("written by fsmaker, {kernel}"),
                ConfigSource::Installed(path) => format!("from {}", path.display()),
            };
            eprintln!("grub.cfg: {config}");
            eprintln!(
                "GRUB: core image of {} in the gap before partition 1",
                human(summary.core_image_len as u64)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fsmaker: {e}");
            ExitCode::FAILURE
        }
    }
}
