//! The demo catalogue a new installation starts with. Its ids are fixed so that the seed
//! document's Appendix 1 script runs unchanged: server offer 18 "1 CPU / 1 GB RAM", disk offer
//! 31 "20 GB disk" and image 66 "Blank disk". Offer 40 is an `image` offer administrators can
//! bill images under (SetImageProductOffer).

use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::ops::storage::image;
use crate::ops::storage::product_offer::{self, CatalogueOffer};

const GIB: i64 = 1 << 30;

/// "Blank disk": servers made from it get a blank first disk.
const BLANK_IMAGE_ID: i64 = 66;

/// (id, name, type, processors, memory MiB, disk bytes)
const OFFERS: &[(i64, &str, &str, i64, i64, i64)] = &[
    (17, "1 CPU / 512 MB RAM", "server", 1, 512, 0),
    (18, "1 CPU / 1 GB RAM", "server", 1, 1024, 0),
    (19, "2 CPU / 2 GB RAM", "server", 2, 2048, 0),
    (20, "4 CPU / 8 GB RAM", "server", 4, 8192, 0),
    (29, "1 GB disk", "disk", 0, 0, GIB),
    (30, "10 GB disk", "disk", 0, 0, 10 * GIB),
    (31, "20 GB disk", "disk", 0, 0, 20 * GIB),
    (32, "50 GB disk", "disk", 0, 0, 50 * GIB),
    (33, "100 GB disk", "disk", 0, 0, 100 * GIB),
    (40, "Licensed image (per server)", "image", 0, 0, 0),
];

/// Creates the demo catalogue when the database has no product offers yet. Two nodes starting
/// together may race here: the loser's insert (or commit) fails on the fixed ids, and it
/// carries on with the winner's catalogue.
pub async fn demo_catalogue(db: &Db) -> ApiResult<bool> {
    if product_offer::any_exist(db).await? {
        return Ok(false);
    }
    let created = async {
        let mut tx = db.begin_write().await?;
        for &(id, name, kind, processors, memory, disk_size) in OFFERS {
            let offer = CatalogueOffer {
                id,
                name,
                kind,
                processors,
                memory,
                disk_size,
            };
            product_offer::insert_with_id(&mut tx, db.backend(), offer).await?;
        }
        image::insert_blank_platform_image(&mut tx, db.backend(), BLANK_IMAGE_ID).await?;
        tx.commit().await?;
        Ok::<_, ApiError>(())
    }
    .await;
    match created {
        Ok(()) => Ok(true),
        Err(err) if product_offer::any_exist(db).await? => {
            tracing::warn!(error = %err, "another node created the demo catalogue first");
            Ok(false)
        }
        Err(err) => Err(err),
    }
}
