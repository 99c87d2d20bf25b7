//! Billing entities: the accounts customers belong to (`extility billing-entity add`). The
//! product offers images are billed under are the images' own (`ops::storage::image`).

use sqlx::AnyConnection;

use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::ops::validate;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingEntity {
    pub id: i64,
    pub uuid: String,
}

async fn find_billing_entity(
    conn: &mut AnyConnection,
    name: &str,
) -> ApiResult<Option<BillingEntity>> {
    let found: Option<(i64, String)> =
        sqlx::query_as("SELECT id, uuid FROM billing_entities WHERE name = $1")
            .bind(name)
            .fetch_optional(conn)
            .await?;
    Ok(found.map(|(id, uuid)| BillingEntity { id, uuid }))
}

async fn insert_billing_entity(conn: &mut AnyConnection, name: &str) -> ApiResult<BillingEntity> {
    let uuid = uuid::Uuid::new_v4().to_string();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO billing_entities (uuid, name, created) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(&uuid)
    .bind(name)
    .bind(now_ms())
    .fetch_one(conn)
    .await?;
    Ok(BillingEntity { id, uuid })
}

/// The billing entity called `name`, created if there is none.
pub async fn find_or_create_billing_entity(
    conn: &mut AnyConnection,
    name: &str,
) -> ApiResult<BillingEntity> {
    let name = validate::name("billing_entity", name)?;
    match find_billing_entity(&mut *conn, &name).await? {
        Some(entity) => Ok(entity),
        None => insert_billing_entity(conn, &name).await,
    }
}

/// Creates a billing entity; CONFLICT if one has the name already.
pub async fn create_billing_entity(db: &Db, name: &str) -> ApiResult<BillingEntity> {
    let name = validate::name("name", name)?;
    let mut tx = crate::ops::audit::begin_write(db).await?;
    if find_billing_entity(&mut tx, &name).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "a billing entity named \"{name}\" exists"
        )));
    }
    let entity = insert_billing_entity(&mut tx, &name).await?;
    tx.commit().await?;
    Ok(entity)
}
