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

/// A server's metadata and its VLAN's subnet.
type MetadataAndSubnet = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The metadata of the server whose NIC has `address` and whose VM runs on `node`, asked on
/// `arrived_at`, the address the connection reached on this host, which must be the gateway
/// of that NIC's VLAN (a redirected guest connection; never one from another network that
/// happens to use the same address). On a tenant network the firewall lets each tap carry
/// its own address only, so the address a connection comes from names the server.
pub async fn for_address(
    db: &Db,
    address: &str,
    arrived_at: &str,
    node: &str,
) -> ApiResult<Option<ServerMetadata>> {
    let row: Option<MetadataAndSubnet> = sqlx::query_as(
        "SELECT s.uuid, s.name, s.initial_user, s.initial_password, v.subnet FROM servers s \
             JOIN vlans v ON v.id = s.vlan_id \
             WHERE s.ipv4 = $1 AND s.node = $2 AND s.metadata_token IS NOT NULL",
    )
    .bind(address)
    .bind(node)
    .fetch_optional(db.pool())
    .await?;
    let Some((uuid, name, initial_user, initial_password, Some(subnet))) = row else {
        return Ok(None);
    };
    let gateway = subnet
        .parse::<ipnet::Ipv4Net>()
        .ok()
        .map(|net| crate::network::addresses::gateway(net).to_string());
    if gateway.as_deref() != Some(arrived_at) {
        return Ok(None);
    }
    Ok(Some(ServerMetadata {
        uuid,
        name,
        initial_user,
        initial_password,
    }))
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
