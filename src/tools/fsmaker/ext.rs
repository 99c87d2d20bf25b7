//! The ext2/3/4 file system fsmaker puts GRUB's files into: its superblock (read here) and
//! changes made with e2fsprogs (`debugfs -w`, `e2fsck`, `resize2fs`) on the copy inside the
//! disk image, addressed as `disk?offset=1048576` so that no loop device or root is needed.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use uuid::Uuid;

use super::FsmakerError;
use super::tool;

const SUPERBLOCK: u64 = 1024;
const MAGIC: u16 = 0xEF53;
const INCOMPAT_64BIT: u32 = 0x80;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub block_size: u64,
    pub blocks: u64,
    pub uuid: Uuid,
    pub label: String,
}

impl Superblock {
    /// Reads the superblock of the file system at `offset` in `file`; `None` if there is no
    /// ext2/3/4 file system there.
    pub fn read(file: &File, offset: u64) -> std::io::Result<Option<Superblock>> {
        let mut sb = [0u8; 1024];
        match file.read_exact_at(&mut sb, offset + SUPERBLOCK) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        Ok(Self::parse(&sb))
    }

    pub fn parse(sb: &[u8; 1024]) -> Option<Superblock> {
        let u32_at = |at: usize| u32::from_le_bytes(sb[at..at + 4].try_into().expect("4 bytes"));
        if u16::from_le_bytes([sb[56], sb[57]]) != MAGIC {
            return None;
        }
        let log_block_size = u32_at(24);
        if log_block_size > 6 {
            return None; // blocks of 1 KiB to 64 KiB only
        }
        let mut blocks = u32_at(4) as u64;
        if u32_at(96) & INCOMPAT_64BIT != 0 {
            blocks |= (u32_at(0x150) as u64) << 32;
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&sb[104..120]);
        let label = sb[120..136]
            .iter()
            .take_while(|&&b| b != 0)
            .map(|&b| b as char)
            .collect();
        Some(Superblock {
            block_size: 1024 << log_block_size,
            blocks,
            uuid: Uuid::from_bytes(uuid),
            label,
        })
    }

    pub fn size(&self) -> u64 {
        self.blocks * self.block_size
    }
}

/// The file system at `offset` of the disk image `image` (a file name inside `dir`, where
/// e2fsprogs run: naming it relative to `dir` keeps paths with `?` or spaces out of their way).
pub struct ExtImage<'a> {
    pub dir: &'a Path,
    pub image: &'a str,
    pub offset: u64,
}

/// A `debugfs` command, and the answer it may give that is no error for us: the line starts
/// with one of the prefixes (the reporting function) and contains the text.
pub struct Step {
    pub command: String,
    tolerate: Option<(&'static [&'static str], &'static str)>,
}

impl Step {
    pub fn new(command: String) -> Step {
        Step {
            command,
            tolerate: None,
        }
    }

    /// `mkdir` of a directory that may be there already.
    pub fn mkdir(path: &str) -> Step {
        Step {
            command: format!("mkdir {path}"),
            tolerate: Some((&["mkdir:", "ext2fs_mkdir:"], "already exists")),
        }
    }

    /// `rm` of a file that may not be there.
    pub fn rm(path: &str) -> Step {
        Step {
            command: format!("rm {path}"),
            tolerate: Some((&["rm:"], "File not found by ext2_lookup")),
        }
    }
}

impl ExtImage<'_> {
    fn spec(&self) -> String {
        format!("{}?offset={}", self.image, self.offset)
    }

    /// Runs `steps` in one `debugfs -w` session. debugfs exits 0 whatever happens and reports
    /// failures on standard error, one line each: any line other than its banner and the
    /// tolerated answers is a failure.
    pub fn change(&self, steps: &[Step]) -> Result<(), FsmakerError> {
        let script: String = steps.iter().map(|s| format!("{}\n", s.command)).collect();
        let script_path = self.dir.join("debugfs.cmds");
        std::fs::write(&script_path, script).map_err(|e| FsmakerError::Io {
            what: "write a debugfs script".into(),
            reason: e.to_string(),
        })?;
        let output = tool::run_ok(
            "debugfs",
            &["-w", "-f", "debugfs.cmds", &self.spec()],
            self.dir,
        )?;
        let tolerated: Vec<_> = steps.iter().filter_map(|s| s.tolerate).collect();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let failures: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with("debugfs "))
            .filter(|line| {
                !tolerated.iter().any(|(prefixes, text)| {
                    prefixes.iter().any(|p| line.starts_with(p)) && line.contains(text)
                })
            })
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(FsmakerError::ToolFailed {
                tool: "debugfs".into(),
                detail: failures.join("; "),
            })
        }
    }

    /// Names in directory `path` (without `.` and `..`); `None` if there is no such directory.
    pub fn list(&self, path: &str) -> Result<Option<Vec<String>>, FsmakerError> {
        let command = format!("ls -p {path}");
        let output = tool::run_ok("debugfs", &["-R", &command, &self.spec()], self.dir)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("File not found") || stderr.contains("Ext2 inode is not a directory") {
            return Ok(None);
        }
        // `ls -p` lines look like `/12/040755/0/0/name/size/`.
        let names = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split('/').nth(5).map(str::to_string))
            .filter(|name| !name.is_empty() && name != "." && name != "..")
            .collect();
        Ok(Some(names))
    }

    /// Grows the file system to `size` bytes: `e2fsck -f` (which resize2fs insists on), then
    /// `resize2fs`.
    pub fn grow(&self, size: u64) -> Result<(), FsmakerError> {
        let spec = self.spec();
        let check = tool::run("e2fsck", &["-f", "-y", &spec], self.dir)?;
        // 0: clean, 1: errors corrected; anything else means it is not safe to go on.
        if !matches!(check.status.code(), Some(0 | 1)) {
            return Err(tool::failed("e2fsck", &check));
        }
        let blocks = format!("{}K", size / 1024);
        tool::run_ok("resize2fs", &[&spec, &blocks], self.dir)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_superblock_gives_size_uuid_and_label() {
        let mut sb = [0u8; 1024];
        sb[4..8].copy_from_slice(&16384u32.to_le_bytes());
        sb[24..28].copy_from_slice(&2u32.to_le_bytes()); // 4 KiB blocks
        sb[56..58].copy_from_slice(&MAGIC.to_le_bytes());
        sb[104..120].copy_from_slice(&[0x11; 16]);
        sb[120..124].copy_from_slice(b"root");
        let parsed = Superblock::parse(&sb).unwrap();
        assert_eq!(parsed.size(), 64 << 20);
        assert_eq!(parsed.label, "root");
        assert_eq!(
            parsed.uuid.to_string(),
            "11111111-1111-1111-1111-111111111111"
        );
        sb[56] = 0;
        assert!(Superblock::parse(&sb).is_none());
    }
}
