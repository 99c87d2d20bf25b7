//! MBR and GPT partition tables: reading them from the start of an image (to print them and
//! to check they fit a destination) and writing a one-partition MBR (for `fsmaker`).
//!
//! Only what those uses need: primary MBR entries (an extended partition is shown as one
//! entry; its logical partitions lie inside it, so the fit check holds), and the primary GPT
//! header with its entry array, both checked against their CRC32.

use std::fmt;

use uuid::Uuid;

use crate::size::human;

/// Logical sector size of an MBR disk image, and of GPT unless the header says otherwise.
pub const SECTOR: u64 = 512;

/// Bytes of the start of an image that [`PartitionTable::parse`] looks at: enough for a GPT
/// with the usual 128 entries on 4,096-byte sectors.
pub const HEAD_LEN: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Mbr {
        disk_id: u32,
    },
    Gpt {
        disk_guid: Uuid,
        /// Where this image keeps its backup header (the last sector of the disk it was made
        /// for); it must exist on the destination too.
        backup_lba: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub number: u32,
    pub first_sector: u64,
    /// Inclusive, as fdisk shows it.
    pub last_sector: u64,
    pub bootable: bool,
    /// `83 Linux`, `Linux filesystem`, or the raw id when unknown.
    pub type_name: String,
    /// The GPT partition name (empty for MBR).
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    pub scheme: Scheme,
    pub sector_size: u64,
    pub partitions: Vec<Partition>,
}

impl PartitionTable {
    /// Finds a partition table in the first bytes of an image: a GPT (on 512 or 4,096-byte
    /// sectors) or else an MBR. `None` when there is neither, e.g. a bare file system.
    pub fn parse(head: &[u8]) -> Option<PartitionTable> {
        let mbr = parse_mbr(head)?;
        let protective = mbr
            .partitions
            .iter()
            .any(|p| p.type_name.starts_with("ee "));
        if protective {
            for sector_size in [SECTOR, 4096] {
                if let Some(gpt) = parse_gpt(head, sector_size) {
                    return Some(gpt);
                }
            }
        }
        Some(mbr)
    }

    pub fn kind(&self) -> &'static str {
        match self.scheme {
            Scheme::Mbr { .. } => "MBR",
            Scheme::Gpt { .. } => "GPT",
        }
    }

    /// The smallest destination, in bytes, that holds every partition (and the GPT backup).
    pub fn required_size(&self) -> u64 {
        let partitions = self.partitions.iter().map(|p| p.last_sector + 1);
        let backup = match self.scheme {
            Scheme::Gpt { backup_lba, .. } => Some(backup_lba + 1),
            Scheme::Mbr { .. } => None,
        };
        partitions.chain(backup).max().unwrap_or(0) * self.sector_size
    }

    /// What of this table lies beyond `capacity` bytes, said for people; `None` if it fits.
    pub fn overhang(&self, capacity: u64) -> Option<String> {
        let sectors = capacity / self.sector_size;
        let mut problems: Vec<String> = self
            .partitions
            .iter()
            .filter(|p| p.last_sector >= sectors)
            .map(|p| {
                format!(
                    "partition {} ends at {}",
                    p.number,
                    human((p.last_sector + 1) * self.sector_size)
                )
            })
            .collect();
        if let Scheme::Gpt { backup_lba, .. } = self.scheme
            && backup_lba >= sectors
        {
            problems.push(format!(
                "the backup GPT header is at {}",
                human(backup_lba * self.sector_size)
            ));
        }
        (!problems.is_empty()).then(|| problems.join(", "))
    }
}

impl fmt::Display for PartitionTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scheme {
            Scheme::Mbr { disk_id } => write!(f, "MBR partition table, disk id 0x{disk_id:08x}")?,
            Scheme::Gpt { disk_guid, .. } => write!(f, "GPT partition table, disk {disk_guid}")?,
        }
        writeln!(f, ", {}-byte sectors:", self.sector_size)?;
        if self.partitions.is_empty() {
            return writeln!(f, "  (no partitions)");
        }
        writeln!(
            f,
            "  {:>3} {:>4} {:>14} {:>14} {:>11}  type",
            "#", "boot", "first sector", "last sector", "size"
        )?;
        for p in &self.partitions {
            let size = (p.last_sector + 1 - p.first_sector) * self.sector_size;
            write!(
                f,
                "  {:>3} {:>4} {:>14} {:>14} {:>11}  {}",
                p.number,
                if p.bootable { "*" } else { "" },
                p.first_sector,
                p.last_sector,
                human(size),
                p.type_name
            )?;
            if !p.name.is_empty() {
                write!(f, " \"{}\"", p.name)?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

const MBR_ENTRIES: usize = 446;
const MBR_SIGNATURE: usize = 510;

fn parse_mbr(head: &[u8]) -> Option<PartitionTable> {
    if head.len() < 512 || head[MBR_SIGNATURE..512] != [0x55, 0xAA] {
        return None;
    }
    let mut partitions = Vec::new();
    for i in 0..4 {
        let e = &head[MBR_ENTRIES + 16 * i..MBR_ENTRIES + 16 * (i + 1)];
        // A file system's boot sector also ends in 55 AA; its "entries" are code and fail this.
        if e[0] != 0 && e[0] != 0x80 {
            return None;
        }
        let (type_id, start, count) = (e[4], le32(e, 8) as u64, le32(e, 12) as u64);
        if type_id == 0 && start == 0 && count == 0 {
            continue;
        }
        if type_id == 0 || start == 0 || count == 0 {
            return None;
        }
        partitions.push(Partition {
            number: i as u32 + 1,
            first_sector: start,
            last_sector: start + count - 1,
            bootable: e[0] == 0x80,
            type_name: format!("{type_id:02x} {}", mbr_type_name(type_id)),
            name: String::new(),
        });
    }
    Some(PartitionTable {
        scheme: Scheme::Mbr {
            disk_id: le32(head, 440),
        },
        sector_size: SECTOR,
        partitions,
    })
}

fn mbr_type_name(id: u8) -> &'static str {
    match id {
        0x01 | 0x04 | 0x06 | 0x0e => "FAT",
        0x0b | 0x0c => "FAT32",
        0x05 | 0x0f | 0x85 => "Extended",
        0x07 => "NTFS/exFAT",
        0x82 => "Linux swap",
        0x83 => "Linux",
        0x8e => "Linux LVM",
        0xa5 => "FreeBSD",
        0xa6 => "OpenBSD",
        0xa9 => "NetBSD",
        0xee => "GPT protective",
        0xef => "EFI System",
        0xfd => "Linux RAID",
        _ => "unknown",
    }
}

fn parse_gpt(head: &[u8], sector_size: u64) -> Option<PartitionTable> {
    let at = sector_size as usize;
    let header = head.get(at..at + 92)?;
    if &header[..8] != b"EFI PART" {
        return None;
    }
    let header_size = le32(header, 12) as usize;
    let header = head.get(at..at + header_size.clamp(92, sector_size as usize))?;
    let mut zeroed = header.to_vec();
    zeroed[16..20].fill(0);
    if crc32fast::hash(&zeroed) != le32(header, 16) || le64(header, 24) != 1 {
        return None;
    }
    let (entries_lba, count, entry_size) = (
        le64(header, 72),
        le32(header, 80) as usize,
        le32(header, 84) as usize,
    );
    if entry_size < 128 || entry_size % 8 != 0 || count > 4096 {
        return None;
    }
    let start = usize::try_from(entries_lba.checked_mul(sector_size)?).ok()?;
    let entries = head.get(start..start.checked_add(count * entry_size)?)?;
    if crc32fast::hash(entries) != le32(header, 88) {
        return None;
    }
    let mut guid = [0u8; 16];
    guid.copy_from_slice(&header[56..72]);
    let mut partitions = Vec::new();
    for (i, e) in entries.chunks_exact(entry_size).enumerate() {
        let mut type_guid = [0u8; 16];
        type_guid.copy_from_slice(&e[..16]);
        if type_guid == [0; 16] {
            continue;
        }
        let type_guid = Uuid::from_bytes_le(type_guid);
        let name: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| le16(c, 0))
            .take_while(|&c| c != 0)
            .collect();
        let (first, last) = (le64(e, 32), le64(e, 40));
        if last < first {
            return None;
        }
        partitions.push(Partition {
            number: i as u32 + 1,
            first_sector: first,
            last_sector: last,
            bootable: le64(e, 48) & (1 << 2) != 0, // "legacy BIOS bootable"
            type_name: gpt_type_name(&type_guid),
            name: String::from_utf16_lossy(&name),
        });
    }
    Some(PartitionTable {
        scheme: Scheme::Gpt {
            disk_guid: Uuid::from_bytes_le(guid),
            backup_lba: le64(header, 32),
        },
        sector_size,
        partitions,
    })
}

fn gpt_type_name(guid: &Uuid) -> String {
    let known = match guid.to_string().to_ascii_uppercase().as_str() {
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" => "Linux filesystem",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" => "Linux root (x86-64)",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" => "Linux swap",
        "E6D6D379-F507-44C2-A23C-238F2A3DF928" => "Linux LVM",
        "A19D880F-05FC-4D3B-A006-743F0F84911E" => "Linux RAID",
        "BC13C2FF-59E6-4262-A352-B275FD6F7172" => "Linux extended boot",
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => "EFI System",
        "21686148-6449-6E6F-744E-656564454649" => "BIOS boot",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" => "Microsoft basic data",
        "E3C9E316-0B5C-4DB8-817D-F92DF00215AE" => "Microsoft reserved",
        "824CC7A0-36A8-11E3-890A-952519AD3F61" => "OpenBSD data",
        "516E7CB6-6ECF-11D6-8FF8-00022D09712B" => "FreeBSD UFS",
        _ => return guid.to_string(),
    };
    known.to_string()
}

/// One entry of an MBR we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbrEntry {
    pub bootable: bool,
    pub type_id: u8,
    pub first_sector: u32,
    pub sectors: u32,
}

/// A boot sector: `code` (at most 440 bytes of boot code), the disk id, up to four entries
/// and the 55 AA signature.
pub fn mbr_sector(code: &[u8], disk_id: u32, entries: &[MbrEntry]) -> [u8; 512] {
    assert!(code.len() <= 440 && entries.len() <= 4);
    let mut sector = [0u8; 512];
    sector[..code.len()].copy_from_slice(code);
    sector[440..444].copy_from_slice(&disk_id.to_le_bytes());
    for (i, e) in entries.iter().enumerate() {
        let at = MBR_ENTRIES + 16 * i;
        let last = e.first_sector as u64 + e.sectors as u64 - 1;
        sector[at] = if e.bootable { 0x80 } else { 0 };
        sector[at + 1..at + 4].copy_from_slice(&chs(e.first_sector as u64));
        sector[at + 4] = e.type_id;
        sector[at + 5..at + 8].copy_from_slice(&chs(last));
        sector[at + 8..at + 12].copy_from_slice(&e.first_sector.to_le_bytes());
        sector[at + 12..at + 16].copy_from_slice(&e.sectors.to_le_bytes());
    }
    sector[MBR_SIGNATURE] = 0x55;
    sector[MBR_SIGNATURE + 1] = 0xAA;
    sector
}

/// Cylinder/head/sector address on the conventional 255-head, 63-sector geometry, or the
/// "use LBA" marker beyond what CHS can say. Only very old BIOSes read it.
fn chs(lba: u64) -> [u8; 3] {
    const HEADS: u64 = 255;
    const SECTORS: u64 = 63;
    if lba >= 1024 * HEADS * SECTORS {
        return [0xFE, 0xFF, 0xFF];
    }
    let cylinder = lba / (HEADS * SECTORS);
    let head = (lba / SECTORS) % HEADS;
    let sector = lba % SECTORS + 1;
    [
        head as u8,
        sector as u8 | (((cylinder >> 8) as u8) << 6),
        cylinder as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_partition(first: u32, sectors: u32) -> Vec<u8> {
        let entry = MbrEntry {
            bootable: true,
            type_id: 0x83,
            first_sector: first,
            sectors,
        };
        let mut head = vec![0u8; 4096];
        head[..512].copy_from_slice(&mbr_sector(&[0xEB, 0x63], 0x1234abcd, &[entry]));
        head
    }

    #[test]
    fn an_mbr_we_write_reads_back() {
        let table = PartitionTable::parse(&one_partition(2048, 8192)).unwrap();
        assert_eq!(
            table.scheme,
            Scheme::Mbr {
                disk_id: 0x1234abcd
            }
        );
        assert_eq!(table.partitions.len(), 1);
        let p = &table.partitions[0];
        assert_eq!((p.number, p.first_sector, p.last_sector), (1, 2048, 10239));
        assert!(p.bootable);
        assert_eq!(p.type_name, "83 Linux");
        assert_eq!(table.required_size(), 10240 * 512);
        assert!(table.overhang(10240 * 512).is_none());
        let problem = table.overhang(10239 * 512).unwrap();
        assert!(problem.contains("partition 1 ends at 5.0 MiB"), "{problem}");
        let shown = table.to_string();
        assert!(
            shown.contains("0x1234abcd") && shown.contains("83 Linux"),
            "{shown}"
        );
    }

    #[test]
    fn chs_follows_the_conventional_geometry() {
        assert_eq!(chs(2048), [32, 33, 0]);
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(1 << 30), [0xFE, 0xFF, 0xFF]);
    }

    #[test]
    fn boot_sectors_and_blank_images_are_not_tables() {
        assert!(PartitionTable::parse(&[0u8; 4096]).is_none());
        let mut fat = vec![0u8; 512];
        fat[446] = 0x33; // code where the entries would be
        fat[510] = 0x55;
        fat[511] = 0xAA;
        assert!(PartitionTable::parse(&fat).is_none());
    }

    /// A GPT like sgdisk makes for a 16 MiB disk: protective MBR, header, one Linux partition.
    fn gpt_image(last_lba: u64) -> Vec<u8> {
        let mut head = vec![0u8; 34 * 512];
        let protective = MbrEntry {
            bootable: false,
            type_id: 0xee,
            first_sector: 1,
            sectors: last_lba as u32,
        };
        head[..512].copy_from_slice(&mbr_sector(&[], 0, &[protective]));
        let mut entries = vec![0u8; 128 * 128];
        let linux = Uuid::parse_str("0FC63DAF-8483-4772-8E79-3D69D8477DE4").unwrap();
        entries[..16].copy_from_slice(&linux.to_bytes_le());
        entries[32..40].copy_from_slice(&2048u64.to_le_bytes());
        entries[40..48].copy_from_slice(&(last_lba - 34).to_le_bytes());
        for (i, c) in "root".encode_utf16().enumerate() {
            entries[56 + 2 * i..58 + 2 * i].copy_from_slice(&c.to_le_bytes());
        }
        let mut header = vec![0u8; 92];
        header[..8].copy_from_slice(b"EFI PART");
        header[8..12].copy_from_slice(&0x10000u32.to_le_bytes());
        header[12..16].copy_from_slice(&92u32.to_le_bytes());
        header[24..32].copy_from_slice(&1u64.to_le_bytes());
        header[32..40].copy_from_slice(&last_lba.to_le_bytes());
        header[72..80].copy_from_slice(&2u64.to_le_bytes());
        header[80..84].copy_from_slice(&128u32.to_le_bytes());
        header[84..88].copy_from_slice(&128u32.to_le_bytes());
        header[88..92].copy_from_slice(&crc32fast::hash(&entries).to_le_bytes());
        let crc = crc32fast::hash(&header);
        header[16..20].copy_from_slice(&crc.to_le_bytes());
        head[512..604].copy_from_slice(&header);
        head[1024..1024 + entries.len()].copy_from_slice(&entries);
        head
    }

    #[test]
    fn a_gpt_is_read_through_its_protective_mbr() {
        let last_lba = 16 * 2048 - 1;
        let table = PartitionTable::parse(&gpt_image(last_lba)).unwrap();
        assert_eq!(table.kind(), "GPT");
        let p = &table.partitions[0];
        assert_eq!((p.first_sector, p.last_sector), (2048, last_lba - 34));
        assert_eq!(p.type_name, "Linux filesystem");
        assert_eq!(p.name, "root");
        // The backup header in the last sector is what needs the whole 16 MiB.
        assert_eq!(table.required_size(), 16 << 20);
        let problem = table.overhang((16 << 20) - 512).unwrap();
        assert!(problem.contains("backup GPT header"), "{problem}");
    }

    #[test]
    fn a_damaged_gpt_shows_as_its_protective_mbr() {
        let mut head = gpt_image(16 * 2048 - 1);
        head[1024 + 40] ^= 1; // an entry changes: the entries' CRC no longer matches
        let table = PartitionTable::parse(&head).unwrap();
        assert_eq!(table.kind(), "MBR");
        assert_eq!(table.partitions[0].type_name, "ee GPT protective");
    }
}
