//! The demo catalogue every test server starts with (the server's `demo_catalogue`, in
//! `src/ops/catalogue.rs`): the ids the tests use, by name, and the sizes of the disks its offers make.

use super::GIB;

/// Server offer "1 CPU / 512 MB RAM", the smallest.
pub const SERVER_1CPU_512MB: i64 = 17;
/// Server offer "1 CPU / 1 GB RAM" (the one Appendix 1 uses).
pub const SERVER_1CPU_1GB: i64 = 18;
/// Server offer "2 CPU / 2 GB RAM".
pub const SERVER_2CPU_2GB: i64 = 19;

/// Disk offer "1 GB disk", the smallest.
pub const DISK_1GB: i64 = 29;
/// Disk offer "10 GB disk".
pub const DISK_10GB: i64 = 30;
/// Disk offer "20 GB disk" (the one Appendix 1 uses).
pub const DISK_20GB: i64 = 31;

/// The size, in bytes, of a disk made with [`DISK_1GB`].
pub const DISK_1GB_SIZE: u64 = GIB;
/// The size, in bytes, of a disk made with [`DISK_10GB`].
pub const DISK_10GB_SIZE: u64 = 10 * GIB;
/// The size, in bytes, of a disk made with [`DISK_20GB`].
pub const DISK_20GB_SIZE: u64 = 20 * GIB;

/// Image offer "Licensed image (per server)": what administrators bill images under.
pub const IMAGE_OFFER: i64 = 40;

/// Image "Blank disk", the platform's (the one Appendix 1 uses): a disk made from it is blank.
pub const BLANK_IMAGE: i64 = 66;
