//! Product offers: the sizes servers and disks are sold in.

use sqlx::AnyConnection;

use crate::db::{self, Backend, Db, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::ops::{Ctx, args, page};
use crate::wire_struct;

wire_struct! {
    /// Something the platform sells: a server size (`processors`, `memory` in MiB), a disk
    /// size (`disk_size` in bytes), or the use of a billed image (`image`).
    pub struct ProductOffer as "ProductOffer" {
        pub product_offer_id: i64,
        pub product_offer_uuid: String,
        pub name: String,
        pub r#type: String,
        pub processors: i64,
        pub memory: i64,
        pub disk_size: i64,
    }
}

type OfferRow = (i64, String, String, String, i64, i64, i64);

fn from_row(row: OfferRow) -> ProductOffer {
    let (product_offer_id, product_offer_uuid, name, r#type, processors, memory, disk_size) = row;
    ProductOffer {
        product_offer_id,
        product_offer_uuid,
        name,
        r#type,
        processors,
        memory,
        disk_size,
    }
}

macro_rules! select_offer {
    ($where:literal) => {
        concat!(
            "SELECT id, uuid, name, type, processors, memory, disk_size FROM product_offers WHERE ",
            $where
        )
    };
}

pub async fn list_product_offers(
    ctx: &Ctx,
    a: args::ListProductOffers,
) -> ApiResult<Vec<ProductOffer>> {
    let wanted = a.r#type.unwrap_or_default().trim().to_ascii_lowercase();
    if !matches!(wanted.as_str(), "" | "server" | "disk" | "image") {
        return Err(ApiError::invalid(
            "type",
            format!("must be 'server', 'disk', 'image' or empty, got '{wanted}'"),
        ));
    }
    let page = page::ascending(a.page_size, a.after_id)?;
    // Image offers (what servers made from a billed image cost) are listed only when asked for.
    let rows: Vec<OfferRow> = sqlx::query_as(select_offer!(
        "(($1 = '' AND type <> 'image') OR type = $1) AND id > $2 ORDER BY id LIMIT $3"
    ))
    .bind(&wanted)
    .bind(page.cursor)
    .bind(page.limit)
    .fetch_all(ctx.state.db.pool())
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// The offer with this id, which must be of `kind` (`server`, `disk` or `image`); `argument` names the
/// argument in errors.
pub async fn offer_of_kind(
    conn: &mut AnyConnection,
    id: i64,
    kind: &str,
    argument: &str,
) -> ApiResult<ProductOffer> {
    let row: Option<OfferRow> = sqlx::query_as(select_offer!("id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    let offer = row
        .map(from_row)
        .ok_or(ApiError::not_found("product offer", id))?;
    if offer.r#type != kind {
        return Err(ApiError::invalid(
            argument,
            format!(
                "must be a {kind} product offer; {id} is a {} offer",
                offer.r#type
            ),
        ));
    }
    Ok(offer)
}

/// An offer of the catalogue, with the fixed id scripts know it by.
pub struct CatalogueOffer<'a> {
    pub id: i64,
    pub name: &'a str,
    /// `server`, `disk` or `image`.
    pub kind: &'a str,
    pub processors: i64,
    /// MiB.
    pub memory: i64,
    /// Bytes.
    pub disk_size: i64,
}

pub async fn any_exist(db: &Db) -> ApiResult<bool> {
    let offers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM product_offers")
        .fetch_one(db.pool())
        .await?;
    Ok(offers > 0)
}

pub async fn insert_with_id(
    conn: &mut AnyConnection,
    backend: Backend,
    offer: CatalogueOffer<'_>,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO product_offers (id, uuid, name, type, processors, memory, disk_size, \
         created) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(offer.id)
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(offer.name)
    .bind(offer.kind)
    .bind(offer.processors)
    .bind(offer.memory)
    .bind(offer.disk_size)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    db::ids_after_explicit_ones(conn, backend, "product_offers").await?;
    Ok(())
}
