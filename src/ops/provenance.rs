//! Image provenance: where an image's bits came from, and what that still decides.
//!
//! A disk made from an image (CreateDisk, CreateServer's boot disk) records it
//! (`disks.image_id`); clones of the disk's snapshots record the same image and a revert keeps
//! it. An image made of a disk by CreateImage records the disk's image as its source
//! (`images.source_image_id`). Following sources upward gives an image's *lineage*: the image,
//! the image its bits were copied from, and so on up to the *root*. DeleteImage leaves a
//! tombstone (`images.deleted`), so a lineage never loses a step.
//!
//! Three rules follow the bits, all decided when they are needed (nothing is copied down the
//! lineage, so a change at the root reaches every derivative at once):
//!
//! - **Billing.** An image is billed under its own product offer, else under the nearest
//!   ancestor's ([`inherited_offer`]): a server or disk made from a derivative of a billed image
//!   records a usage line under the root's offer, naming the image it was made from.
//! - **Re-publication.** Where the lineage crosses from one owner to another (the derivative's
//!   owner was only published the source), the derivative may be published only if the
//!   source's owner published the source to that owner with `allow_republish`
//!   ([`ensure_may_publish`]).
//! - **Revocation.** Servers and disks are made from a derivative only while, at each such
//!   crossing, the source is still published to the derivative's owner (and, when the bits go
//!   beyond that owner, still with `allow_republish`) and not deleted ([`ensure_usable`]).
//!   Revoking a publication therefore stops new use of everything derived from it, whoever it
//!   reached. What was made already is untouched, as for the source itself.
//!
//! Platform images (no owner) restrict nothing; a customer's derivatives of its own images are
//! its own. This module only reads (`images`, `image_shares`, `customers`, `billing_entities`).

use sqlx::AnyConnection;

use crate::error::{ApiError, ApiResult};

/// How many steps of a lineage are followed, at most (a lineage is as long as the chain of
/// CreateImage copies of copies; sources are always older images, so it never loops).
const MAX_DEPTH: usize = 64;

/// One image of a lineage, as stored (tombstones included).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Ancestor {
    pub id: i64,
    /// `None`: a platform image.
    pub customer_id: Option<i64>,
    pub product_offer_id: Option<i64>,
    pub source_image_id: Option<i64>,
    /// When it was deleted, for a tombstone.
    pub deleted: Option<i64>,
}

async fn ancestor(conn: &mut AnyConnection, image_id: i64) -> ApiResult<Option<Ancestor>> {
    Ok(sqlx::query_as(
        "SELECT id, customer_id, product_offer_id, source_image_id, deleted FROM images \
         WHERE id = $1",
    )
    .bind(image_id)
    .fetch_optional(conn)
    .await?)
}

/// The image `image_id` and its ancestors, nearest first (the last is the root). An ancestor
/// that is not stored (only possible for lineages recorded before tombstones) ends it.
pub async fn lineage(conn: &mut AnyConnection, image_id: i64) -> ApiResult<Vec<Ancestor>> {
    let mut chain: Vec<Ancestor> = Vec::new();
    let mut next = Some(image_id);
    while let Some(id) = next {
        if chain.len() >= MAX_DEPTH || chain.last().is_some_and(|child| id >= child.id) {
            break;
        }
        let Some(found) = ancestor(&mut *conn, id).await? else {
            break;
        };
        next = found.source_image_id;
        chain.push(found);
    }
    Ok(chain)
}

/// The product offer an image with this source inherits: the nearest offer up the source's
/// lineage, the source's own first.
pub async fn inherited_offer(
    conn: &mut AnyConnection,
    source_image_id: Option<i64>,
) -> ApiResult<Option<i64>> {
    let Some(source) = source_image_id else {
        return Ok(None);
    };
    Ok(lineage(conn, source)
        .await?
        .iter()
        .find_map(|a| a.product_offer_id))
}

/// The product offer servers and disks made from an image are billed under: its own, else the
/// nearest ancestor's.
pub async fn billed_offer(conn: &mut AnyConnection, image_id: i64) -> ApiResult<Option<i64>> {
    Ok(lineage(conn, image_id)
        .await?
        .iter()
        .find_map(|a| a.product_offer_id))
}

/// What an image's publication to a customer grants: `None` nothing (not published to the
/// customer, its billing entity or the platform), `Some(false)` use, `Some(true)` use and
/// publishing what the customer derives from it.
async fn grant(
    conn: &mut AnyConnection,
    image_id: i64,
    customer_id: i64,
) -> ApiResult<Option<bool>> {
    let most: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(s.allow_republish) FROM image_shares s JOIN customers c ON c.id = $2 \
         WHERE s.image_id = $1 AND (s.target_kind = 'platform' \
           OR (s.target_kind = 'customer' AND s.target_uuid = c.uuid) \
           OR (s.target_kind = 'billing_entity' AND s.target_uuid = \
               (SELECT b.uuid FROM billing_entities b WHERE b.id = c.billing_entity_id)))",
    )
    .bind(image_id)
    .bind(customer_id)
    .fetch_one(conn)
    .await?;
    Ok(most.map(|m| m != 0))
}

/// Who the bits are going to.
#[derive(Debug, Clone, Copy)]
enum Reach {
    /// A new server or disk of this customer.
    Customer(i64),
    /// A publication: other customers.
    Others,
}

/// Checks each step of the image's lineage where the bits crossed from one owner to another:
/// the source must still be published to the derivative's owner and, when the bits go beyond
/// that owner, with `allow_republish`.
async fn check(conn: &mut AnyConnection, image_id: i64, reach: Reach) -> ApiResult<()> {
    let chain = lineage(&mut *conn, image_id).await?;
    for step in chain.windows(2) {
        let (derivative, source) = (&step[0], &step[1]);
        let (Some(owner), Some(source_owner)) = (derivative.customer_id, source.customer_id) else {
            // Platform images restrict nothing.
            continue;
        };
        if owner == source_owner {
            continue;
        }
        let beyond_owner = match reach {
            Reach::Customer(customer_id) => customer_id != owner,
            Reach::Others => true,
        };
        let what = if derivative.id == image_id {
            format!("image {image_id} is derived from image {}", source.id)
        } else {
            format!(
                "image {image_id} is derived (through image {}) from image {}",
                derivative.id, source.id
            )
        };
        let granted = match source.deleted {
            Some(_) => None,
            None => grant(&mut *conn, source.id, owner).await?,
        };
        match (granted, reach) {
            (None, _) if source.deleted.is_some() => {
                return Err(ApiError::PermissionDenied(format!(
                    "{what}, which its owner has deleted; nothing new can be made from it"
                )));
            }
            (None, _) => {
                return Err(ApiError::PermissionDenied(format!(
                    "{what}, which its owner no longer publishes to the owner of image {}; \
                     nothing new can be made from it",
                    derivative.id
                )));
            }
            (Some(false), Reach::Others) if beyond_owner => {
                return Err(ApiError::PermissionDenied(format!(
                    "{what}, which its owner published without allowing images derived from \
                     it to be published further (PublishImage's allow_republish)"
                )));
            }
            (Some(false), _) if beyond_owner => {
                return Err(ApiError::PermissionDenied(format!(
                    "{what}, which its owner no longer allows to be published further; only \
                     the owner of image {} may make servers and disks from it",
                    derivative.id
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Refuses (PERMISSION_DENIED, naming the source) a new server or disk of `customer_id` from
/// an image whose lineage no longer lets the bits reach the customer.
pub async fn ensure_usable(
    conn: &mut AnyConnection,
    image_id: i64,
    customer_id: i64,
) -> ApiResult<()> {
    check(conn, image_id, Reach::Customer(customer_id)).await
}

/// Refuses (PERMISSION_DENIED, naming the source) to publish an image derived from another
/// owner's image unless that owner allowed it.
pub async fn ensure_may_publish(conn: &mut AnyConnection, image_id: i64) -> ApiResult<()> {
    check(conn, image_id, Reach::Others).await
}
