//! Images: byte-for-byte disk contents that servers and disks are made from.

use sqlx::AnyConnection;

use super::{Caller, Ctx, args};
use crate::error::{ApiError, ApiResult};
use crate::ops::wire::Timestamp;
use crate::wire_struct;

wire_struct! {
    /// An image. `owner` is the owning customer's uuid, or `platform`; `visibility` is
    /// `private`, `shared` (with customers or billing entities), `public` (shared with the whole
    /// platform) or `platform` (a platform image).
    pub struct Image as "Image" {
        pub image_id: i64,
        pub image_name: String,
        pub image_uuid: String,
        /// Bytes.
        pub size: i64,
        /// `disk` or `iso`.
        pub media: String,
        pub default_username: Option<String>,
        pub owner: String,
        pub visibility: String,
        pub created: Timestamp,
    }
}

/// An image as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ImageRow {
    pub id: i64,
    pub uuid: String,
    pub customer_id: Option<i64>,
    pub name: String,
    pub size: i64,
    pub media: String,
    pub default_username: Option<String>,
    pub volume_id: Option<i64>,
    pub product_offer_id: Option<i64>,
    pub created: i64,
    pub owner_uuid: Option<String>,
    pub share_count: i64,
    pub public: i64,
}

impl ImageRow {
    pub fn to_image(&self) -> Image {
        let visibility = if self.customer_id.is_none() {
            "platform"
        } else if self.public > 0 {
            "public"
        } else if self.share_count > 0 {
            "shared"
        } else {
            "private"
        };
        Image {
            image_id: self.id,
            image_name: self.name.clone(),
            image_uuid: self.uuid.clone(),
            size: self.size,
            media: self.media.clone(),
            default_username: self.default_username.clone(),
            owner: self
                .owner_uuid
                .clone()
                .unwrap_or_else(|| "platform".to_string()),
            visibility: visibility.to_string(),
            created: Timestamp(self.created),
        }
    }
}

// An image is usable by a caller when it is a platform image, the caller's own, or shared with
// the caller, the caller's billing entity or the whole platform.
// $1 customer id, $2 customer uuid, $3 billing entity id.
macro_rules! select_usable_images {
    ($and:literal) => {
        concat!(
            "SELECT i.id, i.uuid, i.customer_id, i.name, i.size, i.media, i.default_username, \
             i.volume_id, i.product_offer_id, i.created, c.uuid AS owner_uuid, \
             (SELECT COUNT(*) FROM image_shares s WHERE s.image_id = i.id) AS share_count, \
             (SELECT COUNT(*) FROM image_shares s WHERE s.image_id = i.id \
                AND s.target_kind = 'platform') AS public \
             FROM images i LEFT JOIN customers c ON c.id = i.customer_id \
             WHERE (i.customer_id IS NULL OR i.customer_id = $1 OR EXISTS ( \
               SELECT 1 FROM image_shares s WHERE s.image_id = i.id AND ( \
                 s.target_kind = 'platform' \
                 OR (s.target_kind = 'customer' AND s.target_uuid = $2) \
                 OR (s.target_kind = 'billing_entity' AND s.target_uuid = \
                     (SELECT uuid FROM billing_entities WHERE id = $3))))) ",
            $and
        )
    };
}

pub async fn list_images(ctx: &Ctx, _: args::ListImages) -> ApiResult<Vec<Image>> {
    let rows: Vec<ImageRow> = sqlx::query_as(select_usable_images!("ORDER BY i.id"))
        .bind(ctx.caller.customer_id)
        .bind(&ctx.caller.customer_uuid)
        .bind(ctx.caller.billing_entity_id)
        .fetch_all(ctx.state.db.pool())
        .await?;
    Ok(rows.iter().map(ImageRow::to_image).collect())
}

/// An image the caller may make disks and servers from; NOT_FOUND otherwise.
pub async fn usable_image(
    conn: &mut AnyConnection,
    caller: &Caller,
    image_id: i64,
) -> ApiResult<ImageRow> {
    sqlx::query_as(select_usable_images!("AND i.id = $4"))
        .bind(caller.customer_id)
        .bind(&caller.customer_uuid)
        .bind(caller.billing_entity_id)
        .bind(image_id)
        .fetch_optional(conn)
        .await?
        .ok_or(ApiError::not_found("image", image_id))
}

/// What to insert for a new image.
pub struct NewImage<'a> {
    /// `None` for a platform image.
    pub customer_id: Option<i64>,
    pub name: &'a str,
    pub size: i64,
    pub media: &'a str,
    pub default_username: Option<&'a str>,
    pub generate_password: bool,
    pub volume_id: Option<i64>,
}

/// Inserts an image and returns it as the owner sees it.
pub async fn insert_image(conn: &mut AnyConnection, image: NewImage<'_>) -> ApiResult<Image> {
    let uuid = uuid::Uuid::new_v4().to_string();
    let now = crate::db::now_ms();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO images (uuid, customer_id, name, size, media, default_username, \
         generate_password, volume_id, created) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         RETURNING id",
    )
    .bind(&uuid)
    .bind(image.customer_id)
    .bind(image.name)
    .bind(image.size)
    .bind(image.media)
    .bind(image.default_username)
    .bind(crate::db::flag(image.generate_password))
    .bind(image.volume_id)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    let owner: Option<String> = match image.customer_id {
        Some(customer_id) => {
            sqlx::query_scalar("SELECT uuid FROM customers WHERE id = $1")
                .bind(customer_id)
                .fetch_optional(&mut *conn)
                .await?
        }
        None => None,
    };
    Ok(ImageRow {
        id,
        uuid,
        customer_id: image.customer_id,
        name: image.name.to_string(),
        size: image.size,
        media: image.media.to_string(),
        default_username: image.default_username.map(str::to_string),
        volume_id: image.volume_id,
        product_offer_id: None,
        created: now,
        owner_uuid: owner,
        share_count: 0,
        public: 0,
    }
    .to_image())
}
