//! What a server's VM reads about itself at first boot (its name, uuid, first-boot
//! credentials, SSH keys and network), found by the per-boot secret its hypervisor handed it
//! or, on a tenant network, by the address its connection comes from. Only the secret's hash
//! is stored (`servers.metadata_token`, set by the start job and cleared when the VM ends);
//! the API renders what [`for_token`] and [`for_address`] find as the Extility XML document
//! and as a cloud-init NoCloud datasource (`crate::api::metadata`).

use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};
use sqlx::AnyConnection;

use super::mac_address;
use crate::error::ApiResult;
use crate::ops::accounts::ssh_key;
use crate::ops::state::AppState;

/// How a VM's metadata secret is stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// What the VM holding a secret may read.
#[derive(Debug, Clone)]
pub struct ServerMetadata {
    pub uuid: String,
    pub name: String,
    /// The server's name as a DNS label (its host name).
    pub hostname: String,
    pub initial_user: Option<String>,
    pub initial_password: Option<String>,
    /// The SSH public keys its first boot installs, one OpenSSH line each.
    pub ssh_keys: Vec<String>,
    /// Its NIC, when it is on a VLAN.
    pub nic: Option<NicMetadata>,
}

/// A VM's NIC as its first boot should configure it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicMetadata {
    pub mac: String,
    /// On a tenant network: its address, the VLAN's prefix length and gateway (which is also
    /// its DNS server). `None`: QEMU's user-mode network, configured by DHCP.
    pub ipv4: Option<StaticIpv4>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticIpv4 {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

/// A server row as the lookups read it: id, uuid, name, user, password, VLAN, address, the
/// VLAN's subnet.
type MetadataRow = (
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
);

macro_rules! select_metadata {
    ($where:literal) => {
        concat!(
            "SELECT s.id, s.uuid, s.name, s.initial_user, s.initial_password, s.vlan_id, \
             s.ipv4, v.subnet FROM servers s LEFT JOIN vlans v ON v.id = s.vlan_id WHERE ",
            $where
        )
    };
}

/// The metadata of the server whose NIC has `address` and whose VM runs on `node`, asked on
/// `arrived_at`, the address the connection reached on this host, which must be the gateway
/// of that NIC's VLAN (a redirected guest connection; never one from another network that
/// happens to use the same address). On a tenant network the firewall lets each tap carry
/// its own address only, so the address a connection comes from names the server.
pub async fn for_address(
    state: &AppState,
    address: &str,
    arrived_at: &str,
) -> ApiResult<Option<ServerMetadata>> {
    let node = state.jobs.node_id();
    let mut conn = state.db.pool().acquire().await?;
    let row: Option<MetadataRow> = sqlx::query_as(select_metadata!(
        "s.ipv4 = $1 AND s.node = $2 AND s.metadata_token IS NOT NULL"
    ))
    .bind(address)
    .bind(node)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let subnet = row
        .7
        .as_deref()
        .and_then(|s| s.parse::<ipnet::Ipv4Net>().ok());
    let gateway = subnet.map(|net| crate::network::addresses::gateway(net).to_string());
    if gateway.as_deref() != Some(arrived_at) {
        return Ok(None);
    }
    // Asked through a tenant network: the NIC has its static address there.
    Ok(Some(complete(&mut conn, row, true).await?))
}

/// The metadata of the server whose running VM holds `token`, if any.
pub async fn for_token(state: &AppState, token: &str) -> ApiResult<Option<ServerMetadata>> {
    // The VM runs on this node (its metadata forward connects here): its NIC is on a tenant
    // network if this node's are.
    let bridged = state.network.mode() == crate::network::Mode::Bridged;
    let mut conn = state.db.pool().acquire().await?;
    let row: Option<MetadataRow> = sqlx::query_as(select_metadata!("s.metadata_token = $1"))
        .bind(token_hash(token))
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(row) => Ok(Some(complete(&mut conn, row, bridged).await?)),
        None => Ok(None),
    }
}

async fn complete(
    conn: &mut AnyConnection,
    (id, uuid, name, initial_user, initial_password, vlan_id, ipv4, subnet): MetadataRow,
    bridged: bool,
) -> ApiResult<ServerMetadata> {
    let ssh_keys = ssh_key::keys_of_server(conn, id).await?;
    let static_ipv4 = || {
        let subnet: ipnet::Ipv4Net = subnet.as_deref()?.parse().ok()?;
        Some(StaticIpv4 {
            address: ipv4.as_deref()?.parse().ok()?,
            prefix: subnet.prefix_len(),
            gateway: crate::network::addresses::gateway(subnet),
        })
    };
    let nic = vlan_id.map(|_| NicMetadata {
        mac: mac_address(&uuid),
        ipv4: if bridged { static_ipv4() } else { None },
    });
    Ok(ServerMetadata {
        hostname: crate::network::hostname(&name, id),
        uuid,
        name,
        initial_user,
        initial_password,
        ssh_keys,
        nic,
    })
}
