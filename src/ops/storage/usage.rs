//! Usage: what a customer is billed for, and the only module that writes `usage_records`. A
//! server or disk made from an image that is billed records an `image_use` line (quantity 1),
//! and so does a disk cloned from a snapshot of such a disk; FetchDisk records `bytes_fetched`
//! lines (quantity in bytes). ListUsage shows a customer its own lines.
//!
//! Billing follows the bits: an image without a product offer of its own is billed under the
//! nearest one up its lineage (`provenance`), so a copy of a copy of a billed image records its
//! lines under the original's offer, naming the image that was used.

use sqlx::AnyConnection;

use crate::db::now_ms;
use crate::error::{ApiError, ApiResult};
use crate::ops::storage::image::ImageRow;
use crate::ops::wire::Timestamp;
use crate::ops::{Ctx, args, page};
use crate::wire_struct;

wire_struct! {
    /// One usage line. `kind` is `image_use` (a server, or a disk by CreateDisk or CloneDisk,
    /// made from a billed image: `image_id` is the image used, `product_offer_id` the offer it
    /// is billed under, its own or inherited from the image it was copied from; `quantity` 1)
    /// or `bytes_fetched` (a FetchDisk transfer; `quantity` in bytes).
    /// `image_name` is empty once the image has been deleted.
    pub struct UsageRecord as "UsageRecord" {
        pub usage_id: i64,
        pub kind: String,
        pub image_id: Option<i64>,
        pub image_name: Option<String>,
        pub product_offer_id: Option<i64>,
        pub server_id: Option<i64>,
        pub disk_id: Option<i64>,
        pub job_id: Option<i64>,
        pub quantity: i64,
        pub created: Timestamp,
    }
}

/// What was made from a billed image.
#[derive(Debug, Clone, Copy)]
pub enum ImageUser {
    Server(i64),
    Disk(i64),
}

/// Records the use of an image by a new server or disk, when the image is billed (has a
/// product offer of its own or inherited: [`ImageRow::billed_offer`]). Runs in the transaction
/// that makes the server or disk.
pub async fn record_image_use(
    conn: &mut AnyConnection,
    customer_id: i64,
    image: &ImageRow,
    user: ImageUser,
) -> ApiResult<()> {
    record_use(conn, customer_id, image.id, image.billed_offer(), user).await
}

/// Records the use of the bits of image `image_id` (which may have been deleted since) by a
/// new disk that copies a disk made from it (CloneDisk), when they are billed.
pub async fn record_inherited_use(
    conn: &mut AnyConnection,
    customer_id: i64,
    image_id: i64,
    user: ImageUser,
) -> ApiResult<()> {
    let offer = crate::ops::storage::provenance::billed_offer(&mut *conn, image_id).await?;
    record_use(conn, customer_id, image_id, offer, user).await
}

async fn record_use(
    conn: &mut AnyConnection,
    customer_id: i64,
    image_id: i64,
    product_offer_id: Option<i64>,
    user: ImageUser,
) -> ApiResult<()> {
    let (server_id, disk_id) = match user {
        ImageUser::Server(id) => (Some(id), None),
        ImageUser::Disk(id) => (None, Some(id)),
    };
    let Some(product_offer_id) = product_offer_id else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO usage_records (customer_id, kind, image_id, product_offer_id, server_id, \
         disk_id, quantity, created) VALUES ($1, 'image_use', $2, $3, $4, $5, 1, $6)",
    )
    .bind(customer_id)
    .bind(image_id)
    .bind(product_offer_id)
    .bind(server_id)
    .bind(disk_id)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// Records the bytes a FetchDisk job received over the wire (nothing when there were none),
/// once per job. Runs in the job's fenced transaction. A job already billed adds nothing: an
/// earlier attempt may have billed its failed transfer and died before the job's end was
/// written (the soak found such a job billed twice), and the next attempt fetches the same
/// bytes again.
pub async fn record_bytes_fetched(
    conn: &mut AnyConnection,
    customer_id: i64,
    job_id: i64,
    bytes: u64,
) -> ApiResult<()> {
    if bytes == 0 {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO usage_records (customer_id, kind, job_id, quantity, created) \
         SELECT $1, 'bytes_fetched', $2, $3, $4 WHERE NOT EXISTS \
         (SELECT 1 FROM usage_records WHERE job_id = $2 AND kind = 'bytes_fetched')",
    )
    .bind(customer_id)
    .bind(job_id)
    .bind(bytes as i64)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct UsageRow {
    id: i64,
    kind: String,
    image_id: Option<i64>,
    image_name: Option<String>,
    product_offer_id: Option<i64>,
    server_id: Option<i64>,
    disk_id: Option<i64>,
    job_id: Option<i64>,
    quantity: i64,
    created: i64,
}

/// The caller's usage lines with `from <= created < to` (either bound may be omitted), oldest
/// first.
pub async fn list_usage(ctx: &Ctx, a: args::ListUsage) -> ApiResult<Vec<UsageRecord>> {
    let from = a.from.map_or(i64::MIN, |t| t.0);
    let to = a.to.map_or(i64::MAX, |t| t.0);
    if from > to {
        return Err(ApiError::invalid("from", "must not be after 'to'"));
    }
    let page = page::ascending(a.page_size, a.after_id)?;
    let mut conn = ctx.state.db.pool().acquire().await?;
    // The list is by time, then id: the page goes on after the cursor's line.
    let (after_created, after_id) = match a.after_id {
        None => (i64::MIN, 0),
        Some(id) => sqlx::query_scalar(
            "SELECT created FROM usage_records WHERE id = $1 AND customer_id = $2",
        )
        .bind(id)
        .bind(ctx.customer_id())
        .fetch_optional(&mut *conn)
        .await?
        .map(|created: i64| (created, id))
        .ok_or_else(|| page::unknown_cursor("usage lines", id))?,
    };
    let rows: Vec<UsageRow> = sqlx::query_as(
        "SELECT u.id, u.kind, u.image_id, i.name AS image_name, u.product_offer_id, u.server_id, u.disk_id, u.job_id, \
         u.quantity, u.created FROM usage_records u \
         LEFT JOIN images i ON i.id = u.image_id AND i.deleted IS NULL \
         WHERE u.customer_id = $1 AND u.created >= $2 AND u.created < $3 \
         AND (u.created > $4 OR (u.created = $4 AND u.id > $5)) \
         ORDER BY u.created, u.id LIMIT $6",
    )
    .bind(ctx.customer_id())
    .bind(from)
    .bind(to)
    .bind(after_created)
    .bind(after_id)
    .bind(page.limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| UsageRecord {
            usage_id: r.id,
            kind: r.kind,
            image_id: r.image_id,
            image_name: r.image_name,
            product_offer_id: r.product_offer_id,
            server_id: r.server_id,
            disk_id: r.disk_id,
            job_id: r.job_id,
            quantity: r.quantity,
            created: Timestamp(r.created),
        })
        .collect())
}
