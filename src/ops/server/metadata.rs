//! What a server's VM reads about itself at first boot (its name, uuid and first-boot
//! credentials), found by the per-boot secret its hypervisor handed it. Only the secret's
//! hash is stored (`servers.metadata_token`, set by the start job and cleared when the VM
//! ends); the API's metadata endpoint renders what [`for_token`] finds.

use sha2::{Digest, Sha256};

use crate::db::Db;
use crate::error::ApiResult;

/// How a VM's metadata secret is stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// What the VM holding a secret may read.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ServerMetadata {
    pub uuid: String,
    pub name: String,
    pub initial_user: Option<String>,
    pub initial_password: Option<String>,
}

/// The metadata of the server whose NIC has `address` and whose VM runs on `node`: on a tenant
/// network the firewall lets each tap carry its own address only, so the address a
/// connection comes from names the server.
pub async fn for_address(db: &Db, address: &str, node: &str) -> ApiResult<Option<ServerMetadata>> {
    Ok(sqlx::query_as(
        "SELECT uuid, name, initial_user, initial_password FROM servers \
         WHERE ipv4 = $1 AND node = $2 AND metadata_token IS NOT NULL",
    )
    .bind(address)
    .bind(node)
    .fetch_optional(db.pool())
    .await?)
}

/// The metadata of the server whose running VM holds `token`, if any.
pub async fn for_token(db: &Db, token: &str) -> ApiResult<Option<ServerMetadata>> {
    Ok(sqlx::query_as(
        "SELECT uuid, name, initial_user, initial_password FROM servers WHERE metadata_token = $1",
    )
    .bind(token_hash(token))
    .fetch_optional(db.pool())
    .await?)
}
