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

use std::collections::HashMap;

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

/// The lineages of `image_ids`, each nearest first (the last is the root), read in one query
/// however deep they are: a recursive walk up `source_image_id` in the database, at most
/// [`MAX_DEPTH`] steps, each to an older image. An ancestor that is not stored (only possible
/// for lineages recorded before tombstones) ends its lineage; an id not stored has none.
pub async fn lineages(
    conn: &mut AnyConnection,
    image_ids: &[i64],
) -> ApiResult<HashMap<i64, Vec<Ancestor>>> {
    let mut found: HashMap<i64, Vec<Ancestor>> = HashMap::new();
    if image_ids.is_empty() {
        return Ok(found);
    }
    let mut starts: Vec<i64> = image_ids.to_vec();
    starts.sort_unstable();
    starts.dedup();
    // `$2, $3, ...`: placeholders only (the ids are bound), so the text is the crate's own.
    let placeholders: Vec<String> = (2..starts.len() + 2).map(|n| format!("${n}")).collect();
    let sql = format!(
        "WITH RECURSIVE walk(start_id, id, depth) AS ( \
           SELECT id, id, 0 FROM images WHERE id IN ({}) \
           UNION ALL \
           SELECT w.start_id, i.source_image_id, w.depth + 1 FROM walk w \
           JOIN images i ON i.id = w.id \
           WHERE i.source_image_id IS NOT NULL AND i.source_image_id < i.id AND w.depth + 1 < $1) \
         SELECT w.start_id, i.id, i.customer_id, i.product_offer_id, i.source_image_id, i.deleted \
         FROM walk w JOIN images i ON i.id = w.id ORDER BY w.start_id, w.depth",
        placeholders.join(", ")
    );
    let mut query = sqlx::query_as::<
        _,
        (i64, i64, Option<i64>, Option<i64>, Option<i64>, Option<i64>),
    >(sqlx::AssertSqlSafe(sql))
    .bind(MAX_DEPTH as i64);
    for id in &starts {
        query = query.bind(*id);
    }
    for (start, id, customer_id, product_offer_id, source_image_id, deleted) in
        query.fetch_all(conn).await?
    {
        found.entry(start).or_default().push(Ancestor {
            id,
            customer_id,
            product_offer_id,
            source_image_id,
            deleted,
        });
    }
    Ok(found)
}

/// The image `image_id` and its ancestors, nearest first (the last is the root): [`lineages`]
/// of one image.
pub async fn lineage(conn: &mut AnyConnection, image_id: i64) -> ApiResult<Vec<Ancestor>> {
    Ok(lineages(conn, &[image_id])
        .await?
        .remove(&image_id)
        .unwrap_or_default())
}

/// The offer the nearest image of a lineage that has one has.
pub fn nearest_offer(lineage: &[Ancestor]) -> Option<i64> {
    lineage.iter().find_map(|a| a.product_offer_id)
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
    Ok(nearest_offer(&lineage(conn, source).await?))
}

/// The product offer servers and disks made from an image are billed under: its own, else the
/// nearest ancestor's.
pub async fn billed_offer(conn: &mut AnyConnection, image_id: i64) -> ApiResult<Option<i64>> {
    Ok(nearest_offer(&lineage(conn, image_id).await?))
}

/// What the publications of images to customers grant, for each `(image, customer)` pair:
/// absent nothing (not published to the customer, its billing entity or the platform),
/// `false` use, `true` use and publishing what the customer derives from it. One query for
/// all the pairs, however many crossings a lineage has.
async fn grants(
    conn: &mut AnyConnection,
    pairs: &[(i64, i64)],
) -> ApiResult<HashMap<(i64, i64), bool>> {
    if pairs.is_empty() {
        return Ok(HashMap::new());
    }
    // One SELECT per pair, as a UNION ALL of the crate's own text; the ids are bound.
    let parts: Vec<String> = (0..pairs.len())
        .map(|k| {
            let (image, customer) = (2 * k + 1, 2 * k + 2);
            format!(
                "SELECT CAST(${image} AS BIGINT), CAST(${customer} AS BIGINT), \
                 MAX(s.allow_republish) FROM image_shares s JOIN customers c ON c.id = ${customer} \
                 WHERE s.image_id = ${image} AND (s.target_kind = 'platform' \
                   OR (s.target_kind = 'customer' AND s.target_uuid = c.uuid) \
                   OR (s.target_kind = 'billing_entity' AND s.target_uuid = \
                       (SELECT b.uuid FROM billing_entities b WHERE b.id = c.billing_entity_id)))"
            )
        })
        .collect();
    let sql = parts.join(" UNION ALL ");
    let mut query = sqlx::query_as::<_, (i64, i64, Option<i64>)>(sqlx::AssertSqlSafe(sql));
    for (image, customer) in pairs {
        query = query.bind(*image).bind(*customer);
    }
    Ok(query
        .fetch_all(conn)
        .await?
        .into_iter()
        .filter_map(|(image, customer, most)| most.map(|m| ((image, customer), m != 0)))
        .collect())
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
    // The crossings from one owner to another, whose grants are read at once.
    let crossings: Vec<(i64, i64)> = chain
        .windows(2)
        .filter_map(|step| match (step[0].customer_id, step[1].customer_id) {
            (Some(owner), Some(source_owner))
                if owner != source_owner && step[1].deleted.is_none() =>
            {
                Some((step[1].id, owner))
            }
            _ => None,
        })
        .collect();
    let granted_by = grants(&mut *conn, &crossings).await?;
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
            None => granted_by.get(&(source.id, owner)).copied(),
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
