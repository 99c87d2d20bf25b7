//! The demo catalogue a new installation starts with. Its ids are fixed so that the seed
//! document's Appendix 1 script runs unchanged: server offer 18 "1 CPU / 1 GB RAM", disk offer
//! 31 "20 GB disk" and image 66 "Blank disk". Offer 40 is an `image` offer administrators can
//! bill images under (SetImageProductOffer).

use super::{Backend, Db, now_ms};

const GIB: i64 = 1 << 30;

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
/// together may race here; the loser's insert fails on the fixed ids and it carries on.
pub async fn demo_catalogue(db: &Db) -> anyhow::Result<bool> {
    let offers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM product_offers")
        .fetch_one(db.pool())
        .await?;
    if offers > 0 {
        return Ok(false);
    }
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    for (id, name, kind, processors, memory, disk_size) in OFFERS {
        sqlx::query(
            "INSERT INTO product_offers (id, uuid, name, type, processors, memory, disk_size, created) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(name)
        .bind(kind)
        .bind(processors)
        .bind(memory)
        .bind(disk_size)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO images (id, uuid, customer_id, name, size, media, default_username, \
         generate_password, volume_id, created) VALUES (66, $1, NULL, 'Blank disk', 0, 'disk', NULL, 1, NULL, $2)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if db.backend() == Backend::Postgres {
        // Identity columns do not see explicit ids: move them past the catalogue.
        for table in ["product_offers", "images"] {
            let sql = match table {
                "product_offers" => {
                    "SELECT setval(pg_get_serial_sequence('product_offers', 'id'), (SELECT MAX(id) FROM product_offers))"
                }
                _ => {
                    "SELECT setval(pg_get_serial_sequence('images', 'id'), (SELECT MAX(id) FROM images))"
                }
            };
            sqlx::query(sql).execute(&mut *tx).await?;
        }
    }
    match tx.commit().await {
        Ok(()) => Ok(true),
        Err(err) => {
            tracing::warn!(error = %err, "another node created the demo catalogue first");
            Ok(false)
        }
    }
}
