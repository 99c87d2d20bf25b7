//! Storage objects: disks, snapshots, images and what they are sold and shared as. Uses
//! `core` and `accounts` (VDCs, quota); a disk's server is changed only while stopped, by the
//! lock `core::server_status` takes on its row.
//!
//! Owns: `product_offers` (`product_offer`, and the demo `catalogue`), `disks` and the volume
//! a new disk is made on (`disk`), `snapshots` (`snapshot`), `images` and the offer an image
//! is billed under (`image`), `image_shares` (`publish`), `usage_records` (`usage`); an image's
//! lineage is read in `provenance`; `create_image` is CreateImage and its job kind;
//! `hygiene_reports` (`hygiene_report`), written by the image hygiene jobs of `hygiene`
//! (CheckImage, CheckDisk, CleanImage).

pub mod catalogue;
pub mod create_image;
pub mod disk;
pub mod hygiene;
pub mod hygiene_report;
pub mod image;
pub mod product_offer;
pub mod provenance;
pub mod publish;
pub mod snapshot;
pub mod usage;
