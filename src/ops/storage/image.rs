//! Images: byte-for-byte disk contents that servers and disks are made from.

use sqlx::AnyConnection;

use crate::error::{ApiError, ApiResult};
use crate::ops::wire::Timestamp;
use crate::ops::{Caller, Ctx, args, page, storage::product_offer};
use crate::wire_struct;

wire_struct! {
    /// An image. `owner` is the uuid of the customer who owns (and may have published) it, or
    /// `platform`; `visibility` is `private`, `shared` (with customers or billing entities),
    /// `public` (published to the whole platform) or `platform` (a platform image).
    pub struct Image as "Image" {
        pub image_id: i64,
        pub image_name: String,
        pub image_uuid: String,
        /// Bytes.
        pub size: i64,
        /// `disk` or `iso`.
        pub media: String,
        pub default_username: Option<String>,
        /// Whether servers made from it get a generated first-boot password.
        pub generate_password: bool,
        pub owner: String,
        pub visibility: String,
        /// The product offer servers and disks made from it are billed under, if any: its own,
        /// else the one of the nearest image its bits were copied from.
        pub product_offer_id: Option<i64>,
        /// The image whose bits this one's were copied from (CreateImage of a disk made from
        /// it), if any.
        #[since(2)]
        pub source_image_id: Option<i64>,
        /// The format the bits were fetched in (`raw`, `iso`, `qcow2`, `vmdk`, `vhd`, `vhdx`;
        /// stored as raw whatever it was), carried to what is made from them; nil when they
        /// never came from FetchDisk.
        #[since(2)]
        pub source_format: Option<String>,
        pub created: Timestamp,
        /// What its last check found (CheckImage; GetImageReport has the findings):
        /// `not_checked`, `clean`, `findings` or `unreadable`.
        #[since(2)]
        pub hygiene_status: String,
        /// The highest severity among those findings (`high`, `medium`, `low`); nil when
        /// there are none.
        #[since(2)]
        pub hygiene_severity: Option<String>,
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
    pub generate_password: i64,
    pub volume_id: Option<i64>,
    pub product_offer_id: Option<i64>,
    pub source_image_id: Option<i64>,
    pub source_format: Option<String>,
    pub created: i64,
    pub owner_uuid: Option<String>,
    pub share_count: i64,
    pub public: i64,
    /// Its report's status and highest severity (`hygiene_reports`), if it was checked.
    pub hygiene_status: Option<String>,
    pub hygiene_highest: Option<String>,
    /// The offer inherited from the image's source ([`with_inherited_offers`]), for an image
    /// without one of its own.
    #[sqlx(default)]
    pub inherited_offer_id: Option<i64>,
}

impl ImageRow {
    /// The product offer servers and disks made from the image are billed under.
    pub fn billed_offer(&self) -> Option<i64> {
        self.product_offer_id.or(self.inherited_offer_id)
    }

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
            generate_password: self.generate_password != 0,
            owner: self
                .owner_uuid
                .clone()
                .unwrap_or_else(|| "platform".to_string()),
            visibility: visibility.to_string(),
            product_offer_id: self.billed_offer(),
            source_image_id: self.source_image_id,
            source_format: self.source_format.clone(),
            created: Timestamp(self.created),
            hygiene_status: self
                .hygiene_status
                .clone()
                .unwrap_or_else(|| crate::ops::storage::hygiene_report::NOT_CHECKED.to_string()),
            hygiene_severity: self.hygiene_highest.clone(),
        }
    }
}

// The columns of an [`ImageRow`], with the owner's uuid and how widely the image is shared.
// Tombstones of deleted images (kept for provenance) are never selected.
macro_rules! select_images {
    ($where:literal) => {
        concat!(
            "SELECT i.id, i.uuid, i.customer_id, i.name, i.size, i.media, i.default_username, \
             i.generate_password, i.volume_id, i.product_offer_id, i.source_image_id, \
             i.source_format, i.created, \
             c.uuid AS owner_uuid, \
             (SELECT COUNT(*) FROM image_shares s WHERE s.image_id = i.id) AS share_count, \
             (SELECT COUNT(*) FROM image_shares s WHERE s.image_id = i.id \
                AND s.target_kind = 'platform') AS public, \
             h.status AS hygiene_status, h.highest AS hygiene_highest \
             FROM images i LEFT JOIN customers c ON c.id = i.customer_id \
             LEFT JOIN hygiene_reports h ON h.image_id = i.id \
             WHERE i.deleted IS NULL AND ",
            $where
        )
    };
}

// An image is usable by a caller when it is a platform image, the caller's own, or shared with
// the caller, the caller's billing entity or the whole platform.
// $1 customer id, $2 customer uuid, $3 billing entity id.
macro_rules! select_usable_images {
    ($and:literal) => {
        concat!(
            select_images!(""),
            "(i.customer_id IS NULL OR i.customer_id = $1 OR EXISTS ( \
               SELECT 1 FROM image_shares s WHERE s.image_id = i.id AND ( \
                 s.target_kind = 'platform' \
                 OR (s.target_kind = 'customer' AND s.target_uuid = $2) \
                 OR (s.target_kind = 'billing_entity' AND s.target_uuid = \
                     (SELECT uuid FROM billing_entities WHERE id = $3))))) ",
            $and
        )
    };
}

pub async fn list_images(ctx: &Ctx, a: args::ListImages) -> ApiResult<Vec<Image>> {
    let page = page::ascending(a.page_size, a.after_id)?;
    let name = page::NameFilter::parse("name", a.name.as_deref())?;
    let mut conn = ctx.state.db.pool().acquire().await?;
    let sql = format!(
        "{}AND i.id > $4{} ORDER BY i.id LIMIT $5",
        select_usable_images!(""),
        page::name_condition(&name, "i.name", 6)
    );
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ctx.caller.customer_id)
        .bind(&ctx.caller.customer_uuid)
        .bind(ctx.caller.billing_entity_id)
        .bind(page.cursor)
        .bind(page.limit);
    if let Some(name) = name {
        query = query.bind(name.0);
    }
    let rows: Vec<ImageRow> = query.fetch_all(&mut *conn).await?;
    let rows = with_inherited_offers(&mut conn, rows).await?;
    Ok(rows.iter().map(ImageRow::to_image).collect())
}

/// Fills in the offer each image without one of its own inherits from its source
/// (`provenance::inherited_offer`): the lineages of the whole page in one query.
async fn with_inherited_offers(
    conn: &mut AnyConnection,
    mut rows: Vec<ImageRow>,
) -> ApiResult<Vec<ImageRow>> {
    let inheriting = |row: &ImageRow| row.product_offer_id.is_none();
    let sources: Vec<i64> = rows
        .iter()
        .filter(|row| inheriting(row))
        .filter_map(|row| row.source_image_id)
        .collect();
    let lineages = crate::ops::storage::provenance::lineages(conn, &sources).await?;
    for row in &mut rows {
        if inheriting(row)
            && let Some(lineage) = row.source_image_id.and_then(|s| lineages.get(&s))
        {
            row.inherited_offer_id = crate::ops::storage::provenance::nearest_offer(lineage);
        }
    }
    Ok(rows)
}

/// One image row, with the offer it inherits filled in.
async fn with_inherited_offer(conn: &mut AnyConnection, row: ImageRow) -> ApiResult<ImageRow> {
    let mut rows = with_inherited_offers(conn, vec![row]).await?;
    Ok(rows.remove(0))
}

/// An image the caller may make disks and servers from; NOT_FOUND otherwise.
pub async fn usable_image(
    conn: &mut AnyConnection,
    caller: &Caller,
    image_id: i64,
) -> ApiResult<ImageRow> {
    let row = sqlx::query_as(select_usable_images!("AND i.id = $4"))
        .bind(caller.customer_id)
        .bind(&caller.customer_uuid)
        .bind(caller.billing_entity_id)
        .bind(image_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(ApiError::not_found("image", image_id))?;
    with_inherited_offer(conn, row).await
}

/// Any image by id, whoever owns it (for administrators and for re-reading after a change).
pub async fn image_by_id(conn: &mut AnyConnection, image_id: i64) -> ApiResult<ImageRow> {
    let row = sqlx::query_as(select_images!("i.id = $1"))
        .bind(image_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(ApiError::not_found("image", image_id))?;
    with_inherited_offer(conn, row).await
}

/// An image the caller may change (rename, delete, publish): its own, or, for an
/// administrator, a platform image. An image the caller can only use (published to it, or a
/// platform image) answers PERMISSION_DENIED; one it cannot see, NOT_FOUND.
pub async fn changeable_image(
    conn: &mut AnyConnection,
    caller: &Caller,
    image_id: i64,
) -> ApiResult<ImageRow> {
    let image = usable_image(conn, caller, image_id).await?;
    match image.customer_id {
        Some(owner) if owner == caller.customer_id => Ok(image),
        None if caller.is_admin => Ok(image),
        None => Err(ApiError::PermissionDenied(format!(
            "image {image_id} is a platform image; only administrators may change it"
        ))),
        Some(_) => Err(ApiError::PermissionDenied(format!(
            "image {image_id} was published to you by its owner; only the owner may change, \
             delete or publish it"
        ))),
    }
}

pub async fn rename_image(ctx: &Ctx, a: args::RenameImage) -> ApiResult<Image> {
    let name = crate::ops::validate::name("name", &a.name)?;
    let mut tx = ctx.begin_write().await?;
    let image = changeable_image(&mut tx, &ctx.caller, a.image_id).await?;
    sqlx::query("UPDATE images SET name = $1 WHERE id = $2")
        .bind(&name)
        .bind(image.id)
        .execute(&mut *tx)
        .await?;
    let renamed = image_by_id(&mut tx, image.id).await?;
    tx.commit().await?;
    Ok(renamed.to_image())
}

/// Deletes an image. Disks and servers made from it keep working: they are thin clones of its
/// volume, which lives on (`volumes::release`) until the last of them is gone.
///
/// The row stays as a tombstone (`deleted` set, no volume, no shares) that nothing lists or
/// uses: what was derived from the image still finds its owner and its product offer
/// (`provenance`).
pub async fn delete_image(ctx: &Ctx, a: args::DeleteImage) -> ApiResult<i64> {
    let mut tx = ctx.begin_write().await?;
    let image = changeable_image(&mut tx, &ctx.caller, a.image_id).await?;
    crate::ops::storage::publish::unpublish_everywhere(&mut tx, image.id).await?;
    crate::ops::storage::hygiene_report::forget_image(&mut tx, image.id).await?;
    sqlx::query("UPDATE images SET deleted = $1, volume_id = NULL WHERE id = $2")
        .bind(crate::db::now_ms())
        .bind(image.id)
        .execute(&mut *tx)
        .await?;
    let garbage = match image.volume_id {
        Some(volume_id) => crate::storage::volumes::release(&mut tx, volume_id).await?,
        None => Vec::new(),
    };
    tx.commit().await?;
    crate::storage::volumes::delete_files(ctx.state.storage.clone(), garbage).await;
    Ok(1)
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
    /// The job that made it (CreateImage, FetchDisk).
    pub source_job_id: Option<i64>,
    /// The image whose bits it carries (CreateImage of a disk made from an image): its
    /// provenance.
    pub source_image_id: Option<i64>,
    /// The format its bits were fetched in (see [`Image::source_format`]).
    pub source_format: Option<&'a str>,
}

/// Inserts an image and returns it as the owner sees it.
pub async fn insert_image(conn: &mut AnyConnection, image: NewImage<'_>) -> ApiResult<Image> {
    let uuid = uuid::Uuid::new_v4().to_string();
    let now = crate::db::now_ms();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO images (uuid, customer_id, name, size, media, default_username, \
         generate_password, volume_id, source_job_id, source_image_id, source_format, created) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
    )
    .bind(&uuid)
    .bind(image.customer_id)
    .bind(image.name)
    .bind(image.size)
    .bind(image.media)
    .bind(image.default_username)
    .bind(crate::db::flag(image.generate_password))
    .bind(image.volume_id)
    .bind(image.source_job_id)
    .bind(image.source_image_id)
    .bind(image.source_format)
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
        generate_password: crate::db::flag(image.generate_password),
        volume_id: image.volume_id,
        product_offer_id: None,
        source_image_id: image.source_image_id,
        source_format: image.source_format.map(str::to_string),
        created: now,
        owner_uuid: owner,
        share_count: 0,
        public: 0,
        hygiene_status: None,
        hygiene_highest: None,
        inherited_offer_id: crate::ops::storage::provenance::inherited_offer(
            &mut *conn,
            image.source_image_id,
        )
        .await?,
    }
    .to_image())
}

/// Bills servers and disks made from the image under an `image` product offer (`None`: not
/// billed).
pub async fn set_product_offer(
    conn: &mut AnyConnection,
    image_id: i64,
    product_offer_id: Option<i64>,
) -> ApiResult<()> {
    sqlx::query("UPDATE images SET product_offer_id = $1 WHERE id = $2")
        .bind(product_offer_id)
        .bind(image_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The platform's blank image (no volume: servers made from it get a blank first disk), with
/// the fixed id scripts know it by.
pub async fn insert_blank_platform_image(
    conn: &mut AnyConnection,
    backend: crate::db::Backend,
    id: i64,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO images (id, uuid, customer_id, name, size, media, default_username, \
         generate_password, volume_id, created) \
         VALUES ($1, $2, NULL, 'Blank disk', 0, 'disk', NULL, 1, NULL, $3)",
    )
    .bind(id)
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(crate::db::now_ms())
    .execute(&mut *conn)
    .await?;
    crate::db::ids_after_explicit_ones(conn, backend, "images").await?;
    Ok(())
}

/// Attaches an `image` product offer to any image (0 removes it): each server made from the
/// image then records a usage line. Administrators only.
pub async fn set_image_product_offer(ctx: &Ctx, a: args::SetImageProductOffer) -> ApiResult<Image> {
    if !ctx.caller.is_admin {
        return Err(ApiError::PermissionDenied(
            "only administrators may set the product offer of an image".into(),
        ));
    }
    let mut tx = ctx.begin_write().await?;
    let image = image_by_id(&mut tx, a.image_id).await?;
    let offer = match a.product_offer_id {
        0 => None,
        id => Some(
            product_offer::offer_of_kind(&mut tx, id, "image", "product_offer_id")
                .await?
                .product_offer_id,
        ),
    };
    set_product_offer(&mut tx, image.id, offer).await?;
    let updated = image_by_id(&mut tx, image.id).await?;
    tx.commit().await?;
    Ok(updated.to_image())
}
