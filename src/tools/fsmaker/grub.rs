//! GRUB for BIOS without `grub-install`: `grub-mkimage` builds the core image, and this module
//! does what `grub-bios-setup` would — put `boot.img` in the MBR (keeping the partition table)
//! pointing at the core image, and the core image in the gap before partition 1, its first
//! sector (diskboot) told where the rest of it is.
//!
//! Offsets are GRUB's (`include/grub/i386/pc/boot.h`, `boot/i386/pc/diskboot.S`).

use std::path::Path;

use uuid::Uuid;

use super::FsmakerError;
use super::tool;

/// Where `boot.img` keeps the sector of the core image's first sector (little-endian u64).
const KERNEL_SECTOR: usize = 0x5c;
/// A jump that skips the boot-drive check; grub-bios-setup turns it into two NOPs on hard disks,
/// for BIOSes that pass a wrong drive number.
const DRIVE_CHECK: usize = 0x66;
/// Boot code ends where the disk id and the partition table begin.
pub const BOOT_CODE_LEN: usize = 440;
/// diskboot's blocklist entry: start sector (u64), sector count (u16), load segment (u16),
/// at the end of the core image's first sector.
const BLOCKLIST: usize = 512 - 12;
/// Where diskboot loads the rest of the core image (`GRUB_BOOT_I386_PC_KERNEL_SEG + 0x20`).
const LOAD_SEGMENT: u16 = 0x820;

/// Built into the core image: enough to find partition 1 on the boot disk, read ext2/3/4, run
/// the early configuration and start normal mode; everything else is loaded at run time from
/// `/boot/grub/i386-pc`, where fsmaker copies all of GRUB's modules.
pub const CORE_MODULES: &[&str] = &[
    "biosdisk",
    "part_msdos",
    "ext2",
    "search",
    "test",
    "normal",
    "configfile",
    "echo",
    "serial",
    "terminal",
    "linux",
];

/// The core image's own prefix: partition 1 of the disk the BIOS booted from.
pub const PREFIX: &str = "(,msdos1)/boot/grub";

/// The configuration built into the core image. Normal mode then reads `$prefix/grub.cfg`;
/// should the BIOS name the disk differently, the file system is found by its UUID instead.
pub fn early_config(fs_uuid: &Uuid) -> String {
    format!(
        "# fsmaker: GRUB's configuration is /boot/grub/grub.cfg in partition 1 of the boot disk.\n\
         if [ ! -f \"$prefix/grub.cfg\" ]; then\n\
         \x20   search --no-floppy --fs-uuid --set=root {fs_uuid}\n\
         \x20   set prefix=($root)/boot/grub\n\
         fi\n"
    )
}

/// Checks that `grub_dir` is a GRUB i386-pc module directory (Debian's grub-pc-bin).
pub fn check_dir(grub_dir: &Path) -> Result<(), FsmakerError> {
    for file in ["boot.img", "kernel.img", "moddep.lst"] {
        if !grub_dir.join(file).is_file() {
            return Err(FsmakerError::MissingTool {
                tool: format!("GRUB for BIOS ({} has no {file})", grub_dir.display()),
                package: "grub-pc-bin",
            });
        }
    }
    Ok(())
}

/// Builds the core image with `grub-mkimage` in `work`, and places it at sector 1.
pub fn core_image(grub_dir: &Path, fs_uuid: &Uuid, work: &Path) -> Result<Vec<u8>, FsmakerError> {
    std::fs::write(work.join("early.cfg"), early_config(fs_uuid)).map_err(|e| {
        FsmakerError::Io {
            what: "write GRUB's early configuration".into(),
            reason: e.to_string(),
        }
    })?;
    let dir = grub_dir.to_string_lossy();
    let mut args = vec![
        "-O",
        "i386-pc",
        "-d",
        &dir,
        "-o",
        "core.img",
        "-p",
        PREFIX,
        "-c",
        "early.cfg",
    ];
    args.extend_from_slice(CORE_MODULES);
    tool::run_ok("grub-mkimage", &args, work)?;
    let mut core = std::fs::read(work.join("core.img")).map_err(|e| FsmakerError::Io {
        what: "read the core image".into(),
        reason: e.to_string(),
    })?;
    place_core(&mut core, 1)?;
    Ok(core)
}

/// Tells diskboot (the core image's first sector) that the rest of the image follows it on
/// disk from `first_sector + 1`, and pads the image to whole sectors.
pub fn place_core(core: &mut Vec<u8>, first_sector: u64) -> Result<(), FsmakerError> {
    let not_core = || FsmakerError::Input("grub-mkimage did not make an i386-pc core image".into());
    if core.len() < 1024 || core[BLOCKLIST + 10..512] != LOAD_SEGMENT.to_le_bytes() {
        return Err(not_core());
    }
    core.resize(core.len().div_ceil(512) * 512, 0);
    let rest = u16::try_from(core.len() / 512 - 1).map_err(|_| not_core())?;
    core[BLOCKLIST..BLOCKLIST + 8].copy_from_slice(&(first_sector + 1).to_le_bytes());
    core[BLOCKLIST + 8..BLOCKLIST + 10].copy_from_slice(&rest.to_le_bytes());
    Ok(())
}

/// `boot.img`'s code, set to load the core image from `core_sector` of the boot disk.
pub fn boot_code(grub_dir: &Path, core_sector: u64) -> Result<Vec<u8>, FsmakerError> {
    let path = grub_dir.join("boot.img");
    let mut boot = std::fs::read(&path).map_err(|e| FsmakerError::Io {
        what: format!("read {}", path.display()),
        reason: e.to_string(),
    })?;
    if boot.len() != 512 {
        return Err(FsmakerError::Input(format!(
            "{} is not a boot sector ({} bytes)",
            path.display(),
            boot.len()
        )));
    }
    patch_boot_code(&mut boot, core_sector);
    boot.truncate(BOOT_CODE_LEN);
    Ok(boot)
}

fn patch_boot_code(boot: &mut [u8], core_sector: u64) {
    boot[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_sector.to_le_bytes());
    if boot[DRIVE_CHECK] == 0xEB {
        boot[DRIVE_CHECK] = 0x90;
        boot[DRIVE_CHECK + 1] = 0x90;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diskboot_learns_where_the_rest_of_the_core_is() {
        let mut core = vec![0u8; 3 * 512 + 100];
        core[510..512].copy_from_slice(&LOAD_SEGMENT.to_le_bytes());
        place_core(&mut core, 1).unwrap();
        assert_eq!(core.len(), 4 * 512);
        assert_eq!(&core[500..508], &2u64.to_le_bytes());
        assert_eq!(&core[508..510], &3u16.to_le_bytes());
    }

    #[test]
    fn something_else_is_not_taken_for_a_core_image() {
        let mut junk = vec![0u8; 4096];
        assert!(place_core(&mut junk, 1).is_err());
    }

    #[test]
    fn boot_code_points_at_the_core_and_skips_the_drive_check() {
        let mut boot = vec![0u8; 512];
        boot[DRIVE_CHECK] = 0xEB;
        boot[DRIVE_CHECK + 1] = 0x05;
        patch_boot_code(&mut boot, 1);
        assert_eq!(&boot[KERNEL_SECTOR..KERNEL_SECTOR + 8], &1u64.to_le_bytes());
        assert_eq!(&boot[DRIVE_CHECK..DRIVE_CHECK + 2], &[0x90, 0x90]);
    }
}
