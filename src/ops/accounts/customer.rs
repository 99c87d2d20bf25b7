//! Customers: created by the operator (`extility customer add`), authenticated on every call.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use sqlx::AnyConnection;

use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::ops::{Caller, Ctx, args};
use crate::wire_struct;

wire_struct! {
    /// The calling customer: its ids, and the billing entity it belongs to (what PublishImage
    /// takes to publish to every customer of an entity).
    pub struct Customer as "Customer" {
        pub customer_id: i64,
        pub customer_uuid: String,
        pub email: String,
        pub billing_entity_uuid: String,
        pub billing_entity_name: String,
        pub is_admin: bool,
    }
}

/// Tells callers who they are.
pub async fn get_customer(ctx: &Ctx, _: args::GetCustomer) -> ApiResult<Customer> {
    let (customer_id, customer_uuid, email, billing_entity_uuid, billing_entity_name, is_admin): (
        i64,
        String,
        String,
        String,
        String,
        i64,
    ) = sqlx::query_as(
        "SELECT c.id, c.uuid, c.email, b.uuid, b.name, c.is_admin FROM customers c \
         JOIN billing_entities b ON b.id = c.billing_entity_id WHERE c.id = $1",
    )
    .bind(ctx.customer_id())
    .fetch_one(ctx.state.db.pool())
    .await?;
    Ok(Customer {
        customer_id,
        customer_uuid,
        email,
        billing_entity_uuid,
        billing_entity_name,
        is_admin: is_admin != 0,
    })
}

#[derive(Debug, Clone)]
pub struct NewCustomer {
    pub customer_id: i64,
    pub customer_uuid: String,
    pub billing_entity_uuid: String,
    pub vdc_id: i64,
}

/// Hashes a password with argon2id. CPU-heavy: call it off the async runtime.
pub fn hash_password(password: &str) -> ApiResult<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| ApiError::internal(anyhow::anyhow!("hashing a password: {e}")))
}

/// Checks a password against its stored hash. CPU-heavy: call it off the async runtime.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Whether the platform has any customer yet (a fresh installation has none).
pub async fn any_customer(db: &Db) -> ApiResult<bool> {
    let one: Option<i64> = sqlx::query_scalar("SELECT id FROM customers LIMIT 1")
        .fetch_optional(db.pool())
        .await?;
    Ok(one.is_some())
}

/// Creates a customer, its billing entity if new, and its "Default VDC".
pub async fn create_customer(
    db: &Db,
    email: &str,
    password: &str,
    is_admin: bool,
    billing_entity: &str,
) -> ApiResult<NewCustomer> {
    let email = crate::ops::validate::email(email)?;
    crate::ops::validate::new_password(password, &email)?;
    let password = password.to_string();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password)).await??;
    let now = now_ms();
    let mut tx = crate::ops::audit::begin_write(db).await?;
    let taken: Option<i64> = sqlx::query_scalar("SELECT id FROM customers WHERE email = $1")
        .bind(&email)
        .fetch_optional(&mut *tx)
        .await?;
    if taken.is_some() {
        return Err(ApiError::Conflict(format!(
            "a customer with e-mail {email} exists"
        )));
    }
    let entity =
        crate::ops::accounts::billing::find_or_create_billing_entity(&mut tx, billing_entity)
            .await?;
    let customer_uuid = uuid::Uuid::new_v4().to_string();
    let customer_id: i64 = sqlx::query_scalar(
        "INSERT INTO customers (uuid, email, password_hash, is_admin, billing_entity_id, created) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(&customer_uuid)
    .bind(&email)
    .bind(&hash)
    .bind(crate::db::flag(is_admin))
    .bind(entity.id)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let vdc_id = crate::ops::accounts::vdc::insert_vdc(&mut tx, customer_id, "Default VDC")
        .await?
        .vdc_id;
    tx.commit().await?;
    Ok(NewCustomer {
        customer_id,
        customer_uuid,
        billing_entity_uuid: entity.uuid,
        vdc_id,
    })
}

/// The id of the customer with this e-mail, if there is one.
pub async fn id_by_email(conn: &mut AnyConnection, email: &str) -> ApiResult<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM customers WHERE email = $1")
            .bind(email.trim().to_ascii_lowercase())
            .fetch_optional(conn)
            .await?,
    )
}

/// Locks the customer's row for the rest of the transaction (on PostgreSQL; SQLite write
/// transactions hold the database lock anyway): what serializes the quota checks of one
/// customer's concurrent calls (`crate::ops::accounts::quota::ensure_room`).
pub async fn lock_customer(conn: &mut AnyConnection, customer_id: i64) -> ApiResult<()> {
    sqlx::query("UPDATE customers SET created = created WHERE id = $1")
        .bind(customer_id)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct CustomerRow {
    id: i64,
    uuid: String,
    password_hash: String,
    is_admin: i64,
    billing_entity_id: i64,
}

/// What checking a password against an e-mail needs, read from the database: the customer
/// and its hash, or for an unknown e-mail a dummy hash, so that both cost the same.
pub struct Login {
    row: Option<CustomerRow>,
}

impl Login {
    /// Checks the password. Answers the same for an unknown e-mail as for a wrong password,
    /// and takes as long. CPU-heavy (argon2): call it off the async runtime.
    pub fn check(self, password: &str) -> ApiResult<Caller> {
        let hash = self
            .row
            .as_ref()
            .map_or(DUMMY_HASH, |row| row.password_hash.as_str());
        let ok = verify_password(password, hash);
        match self.row {
            Some(row) if ok => Ok(Caller {
                customer_id: row.id,
                customer_uuid: row.uuid,
                billing_entity_id: row.billing_entity_id,
                is_admin: row.is_admin != 0,
                token_id: None,
            }),
            _ => Err(ApiError::Unauthenticated),
        }
    }
}

/// Reads what checking a password for `email` needs.
pub async fn find_login(db: &Db, email: &str) -> ApiResult<Login> {
    let row = sqlx::query_as::<_, CustomerRow>(
        "SELECT id, uuid, password_hash, is_admin, billing_entity_id FROM customers WHERE email = $1",
    )
    .bind(email.trim().to_ascii_lowercase())
    .fetch_optional(db.pool())
    .await?;
    Ok(Login { row })
}

/// An argon2id hash of a random password, checked for unknown e-mails so that they cost the
/// same time as known ones.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0J6lrG3Hkqzqg3CpoC1y4m2hSxeHFzk2gf5m5zMVbhs";

#[cfg(test)]
mod tests {
    use super::*;

    /// An unknown e-mail costs what a known one does only while the dummy hash has the
    /// parameters real hashes get.
    #[test]
    fn the_dummy_hash_costs_what_a_real_one_does() {
        let params = |hash: &str| hash.rsplitn(3, '$').nth(2).unwrap().to_string();
        let real = hash_password("a password").unwrap();
        assert_eq!(params(DUMMY_HASH), params(&real));
        assert!(!verify_password("a password", DUMMY_HASH));
    }
}
