//! Publishing images to other customers: PublishImage and RevokeImage.
//!
//! An image's owner publishes it to a customer (by customer uuid), to a billing entity (every
//! customer of it, by its uuid) or to the whole platform (`platform`: administrators only,
//! unless the operator runs `serve --customers-may-publish-to-platform`). Recipients see it in
//! ListImages and make servers and disks from it; only the owner changes, deletes, publishes or
//! revokes it (`image::changeable_image`). Revoking stops new use: servers and disks already
//! made are thin clones of the image's volume, which lives on while they do.
//!
//! A publication may allow re-publication (`allow_republish`): only then may its recipients
//! publish the images they make (CreateImage) of disks made from it. Revoking it stops new use
//! of those derivatives too, whoever they reached (`provenance`).
//!
//! PublishImage answers, since API version 2, with the image's stored hygiene report
//! (`hygiene_report`), so that its owner sees what the recipients receive.

use sqlx::AnyConnection;

use crate::db::now_ms;
use crate::error::{ApiError, ApiResult};
use crate::ops::storage::hygiene_report::{self, Subject};
use crate::ops::storage::image::{self, ImageRow};
use crate::ops::{Ctx, args, page, results, storage::provenance};

/// Who an image is published to, as `image_shares` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Audience {
    Platform,
    /// A customer or billing entity uuid, not yet resolved.
    Uuid(String),
}

const PLATFORM: &str = "platform";

fn parse_audience(publish_to: &str) -> ApiResult<Audience> {
    let text = publish_to.trim();
    if text.eq_ignore_ascii_case(PLATFORM) {
        return Ok(Audience::Platform);
    }
    uuid::Uuid::parse_str(text)
        .map(|u| Audience::Uuid(u.hyphenated().to_string()))
        .map_err(|_| {
            ApiError::invalid(
                "publish_to",
                "must be a customer uuid, a billing entity uuid or 'platform'",
            )
        })
}

/// The `image_shares.target_kind` of a uuid: a customer's or a billing entity's.
async fn kind_of_uuid(conn: &mut AnyConnection, uuid: &str) -> ApiResult<&'static str> {
    let customer: Option<i64> = sqlx::query_scalar("SELECT id FROM customers WHERE uuid = $1")
        .bind(uuid)
        .fetch_optional(&mut *conn)
        .await?;
    if customer.is_some() {
        return Ok("customer");
    }
    let entity: Option<i64> = sqlx::query_scalar("SELECT id FROM billing_entities WHERE uuid = $1")
        .bind(uuid)
        .fetch_optional(&mut *conn)
        .await?;
    match entity {
        Some(_) => Ok("billing_entity"),
        None => Err(ApiError::invalid(
            "publish_to",
            format!("no customer or billing entity has uuid {uuid}"),
        )),
    }
}

fn ensure_customer_image(image: &ImageRow) -> ApiResult<()> {
    if image.customer_id.is_none() {
        return Err(ApiError::invalid(
            "image_id",
            format!(
                "image {} is a platform image, which every customer can use already",
                image.id
            ),
        ));
    }
    Ok(())
}

/// Publishes the image, and answers with its last hygiene report as it stood when it was
/// published (read in the same transaction): the owner sees what the recipients receive.
pub async fn publish_image(ctx: &Ctx, a: args::PublishImage) -> ApiResult<results::PublishImage> {
    let audience = parse_audience(&a.publish_to)?;
    if audience == Audience::Platform
        && !ctx.caller.is_admin
        && !ctx.state.config.customers_may_publish_to_platform
    {
        return Err(ApiError::PermissionDenied(
            "only administrators may publish images to the whole platform".into(),
        ));
    }
    let mut tx = ctx.begin_write().await?;
    let image = image::changeable_image(&mut tx, &ctx.caller, a.image_id).await?;
    ensure_customer_image(&image)?;
    // An image derived from an image another owner published to the caller goes no further
    // than that owner allows.
    provenance::ensure_may_publish(&mut tx, image.id).await?;
    // What the recipients receive, as the image's last check found it; publishing runs no
    // check (one takes minutes in an appliance: CheckImage is a job).
    let hygiene = hygiene_report::load(&mut tx, Subject::Image(image.id)).await?;
    // The operator may require what is shared to have been checked and found free of what
    // lets one server log in to, or impersonate, another (`hygiene_report`).
    if ctx.state.config.publish_requires_clean {
        hygiene_report::ensure_clean_enough(image.id, &hygiene)?;
    }
    let (kind, target) = match audience {
        Audience::Platform => ("platform", PLATFORM.to_string()),
        Audience::Uuid(uuid) => {
            let kind = kind_of_uuid(&mut tx, &uuid).await?;
            if kind == "customer" && uuid == ctx.caller.customer_uuid {
                return Err(ApiError::invalid(
                    "publish_to",
                    "names you: the image is yours already",
                ));
            }
            (kind, uuid)
        }
    };
    // Publishing twice to the same audience is not an error: the image simply stays published,
    // and `allow_republish`, when given, replaces what the publication allowed (left out, it
    // stays as it was; a new publication does not allow re-publication).
    let allow = a.allow_republish.map(crate::db::flag);
    sqlx::query(
        "INSERT INTO image_shares (image_id, target_kind, target_uuid, created, allow_republish) \
         VALUES ($1, $2, $3, $4, COALESCE($5, 0)) \
         ON CONFLICT (image_id, target_kind, target_uuid) \
         DO UPDATE SET allow_republish = COALESCE($5, image_shares.allow_republish)",
    )
    .bind(image.id)
    .bind(kind)
    .bind(&target)
    .bind(now_ms())
    .bind(allow)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(results::PublishImage { result: 1, hygiene })
}

pub async fn revoke_image(ctx: &Ctx, a: args::RevokeImage) -> ApiResult<i64> {
    let audience = parse_audience(&a.publish_to)?;
    let mut tx = ctx.begin_write().await?;
    let image = image::changeable_image(&mut tx, &ctx.caller, a.image_id).await?;
    ensure_customer_image(&image)?;
    let (sql, target) = match &audience {
        Audience::Platform => (
            "DELETE FROM image_shares WHERE image_id = $1 AND target_uuid = $2 \
             AND target_kind = 'platform'",
            PLATFORM,
        ),
        Audience::Uuid(uuid) => (
            "DELETE FROM image_shares WHERE image_id = $1 AND target_uuid = $2 \
             AND target_kind IN ('customer', 'billing_entity')",
            uuid.as_str(),
        ),
    };
    let revoked = sqlx::query(sql)
        .bind(image.id)
        .bind(target)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if revoked == 0 {
        return Err(ApiError::invalid(
            "publish_to",
            format!("image {} is not published to {target}", image.id),
        ));
    }
    tx.commit().await?;
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_are_platform_or_uuids() {
        assert_eq!(parse_audience(" Platform ").unwrap(), Audience::Platform);
        assert_eq!(
            parse_audience("6F9619FF-8B86-D011-B42D-00C04FC964FF").unwrap(),
            Audience::Uuid("6f9619ff-8b86-d011-b42d-00c04fc964ff".into())
        );
        let err = parse_audience("everyone").unwrap_err();
        assert_eq!(err.code(), "INVALID_ARGUMENT");
        assert!(err.to_string().contains("publish_to"));
    }
}

crate::wire_struct! {
    /// Whom an image is published to: `kind` is `customer`, `billing_entity` or `platform`;
    /// `uuid` is the customer's or billing entity's uuid (`platform` for the platform) and
    /// `name` the billing entity's name, the customer's uuid (never an e-mail address) or
    /// "the whole platform". `allow_republish`: whether the recipients may publish the images
    /// they derive from it. `share_id` names the publication (ListImageShares' `after_id`).
    pub struct ImageShare as "ImageShare" {
        pub image_id: i64,
        pub kind: String,
        pub uuid: String,
        pub name: String,
        #[since(2)]
        pub allow_republish: bool,
        pub created: crate::ops::wire::Timestamp,
        #[since(2)]
        pub share_id: i64,
    }
}

/// Whom one of the caller's images is published to (its owner's view).
pub async fn list_image_shares(ctx: &Ctx, a: args::ListImageShares) -> ApiResult<Vec<ImageShare>> {
    let page = page::ascending(a.page_size, a.after_id)?;
    let mut conn = ctx.state.db.pool().acquire().await?;
    let image = image::changeable_image(&mut conn, &ctx.caller, a.image_id).await?;
    // Customers are named by their uuid: an e-mail address is a login, not a name to show.
    let rows: Vec<(String, String, Option<String>, i64, i64, i64)> = sqlx::query_as(
        "SELECT s.target_kind, s.target_uuid, \
         (SELECT name FROM billing_entities b WHERE s.target_kind = 'billing_entity' \
            AND b.uuid = s.target_uuid), \
         s.allow_republish, s.created, s.id FROM image_shares s \
         WHERE s.image_id = $1 AND s.id > $2 ORDER BY s.id LIMIT $3",
    )
    .bind(image.id)
    .bind(page.cursor)
    .bind(page.limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(kind, uuid, entity_name, allow_republish, created, share_id)| ImageShare {
                image_id: image.id,
                name: match kind.as_str() {
                    "platform" => "the whole platform".to_string(),
                    "billing_entity" => entity_name.unwrap_or_default(),
                    _ => uuid.clone(),
                },
                kind,
                uuid,
                allow_republish: allow_republish != 0,
                created: crate::ops::wire::Timestamp(created),
                share_id,
            },
        )
        .collect())
}

/// Withdraws every share of an image (it is being deleted).
pub async fn unpublish_everywhere(conn: &mut AnyConnection, image_id: i64) -> ApiResult<()> {
    sqlx::query("DELETE FROM image_shares WHERE image_id = $1")
        .bind(image_id)
        .execute(conn)
        .await?;
    Ok(())
}
