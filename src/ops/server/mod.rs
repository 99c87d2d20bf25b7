//! Servers: virtual machines made of a server product offer and attached disks, on a VLAN,
//! with port forwards. The domain uses `core`, `accounts`, `network` and `storage`.
//!
//! `create` makes servers, `change` renames them and changes their offers, `disks` attaches
//! and detaches disks, `power` starts, stops and destroys them (operations and the jobs behind
//! them), `placement` picks the node a start runs on, `self_fence` keeps the node's heartbeat and powers
//! its VMs off when it cannot (before another node may take their servers over), `vm` follows what their virtual machines
//! do on their own and shows their consoles, `metadata` is what a VM reads about itself. This
//! module is the only one that writes `servers`; `port_forward` the only one that writes
//! `port_forwards`. The statuses and the stopped-server lock other domains need are in
//! `core` (`ops::server_status`).

mod change;
pub mod console;
pub mod console_activity;
mod create;
mod disks;
mod firewall;
pub mod metadata;
pub mod placement;
pub mod port_forward;
mod power;
pub mod self_fence;
mod vm;

use crate::ops::network::plan::mac_address;
pub use crate::ops::server_status::{ServerStatus, lock_stopped_server};
pub use change::{change_server_product_offer, rename_server};
pub use create::{assign_missing_addresses, create_server};
pub use disks::{attach_disk, detach_disk};
pub use firewall::apply_firewall_template;
pub use power::{
    DestroyServerJob, StartServerJob, StopHow, StopServerJob, destroy_server, start_server,
    stop_server,
};
pub use vm::{
    NODE_PROOF_HEADER, NodeCall, accepts_node_call, console_for_node, console_here, console_path,
    get_console_log, live_node_address, record_vm_event, recover_servers,
};

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

use self::port_forward::PortForward;
use crate::db::{Tx, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::hypervisor::{Media, MetadataAccess, StopMethod, VmDisk, VmEvent, VmSpec, VmState};
use crate::jobs::{JobKind, JobOutcome, Lane, RunningJob};
use crate::ops::accounts::quota::{self, Need};
use crate::ops::state::AppState;
use crate::ops::storage::disk::{self, Disk, DiskRow, NewDisk, select_disks};
use crate::ops::wire::Timestamp;
use crate::ops::{
    Ctx, accounts::ssh_key, accounts::vdc, args, network::plan, network::vlan, page,
    storage::create_image, storage::product_offer, storage::usage, validate,
};
use crate::storage::volumes;
use crate::wire_struct;

wire_struct! {
    /// A server. `status`: 1 error, 2 running, 3 starting, 4 stopping, 5 stopped (named in
    /// `status_name`), with
    /// `status_reason` saying why when it is in error. `memory` is in MiB. `disks` are in attach
    /// order (the first is the boot disk). `initial_user` and `initial_password` are the
    /// first-boot credentials. A server on a VLAN has a NIC: `mac_address`, the
    /// `ip_address` the platform gave it (by DHCP), and its `port_forwards`. `ssh_key_ids` are
    /// the caller's SSH keys its first boot installs (a deleted key drops out). `node` is the
    /// node that runs it, or ran it last (nil: never started).
    pub struct Server as "Server" {
        pub server_id: i64,
        pub server_name: String,
        pub server_uuid: String,
        pub status: i64,
        pub status_reason: Option<String>,
        pub vdc_id: i64,
        pub vlan_id: Option<i64>,
        pub processors: i64,
        pub memory: i64,
        pub image_id: Option<i64>,
        pub product_offer_id: i64,
        pub disks: Vec<Disk>,
        pub initial_user: Option<String>,
        pub initial_password: Option<String>,
        pub created: Timestamp,
        #[since(2)]
        pub ip_address: Option<String>,
        #[since(2)]
        pub mac_address: Option<String>,
        #[since(2)]
        pub port_forwards: Vec<PortForward>,
        #[since(2)]
        pub ssh_key_ids: Vec<i64>,
        #[since(2)]
        pub node: Option<String>,
        #[since(2)]
        pub status_name: String,
        /// The firewall template the server uses (ApplyFirewallTemplate); nil: none, every
        /// packet the platform allows passes.
        #[since(2)]
        pub firewall_template_id: Option<i64>,
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ServerRow {
    pub id: i64,
    pub uuid: String,
    pub customer_id: i64,
    pub vdc_id: i64,
    pub vlan_id: Option<i64>,
    pub name: String,
    pub status: i64,
    pub status_reason: Option<String>,
    pub processors: i64,
    pub memory: i64,
    pub image_id: Option<i64>,
    pub product_offer_id: i64,
    pub initial_user: Option<String>,
    pub initial_password: Option<String>,
    pub node: Option<String>,
    pub created: i64,
    pub ipv4: Option<String>,
    pub firewall_template_id: Option<i64>,
}

impl ServerRow {
    fn to_server(
        &self,
        disks: Vec<Disk>,
        port_forwards: Vec<PortForward>,
        ssh_key_ids: Vec<i64>,
    ) -> Server {
        Server {
            server_id: self.id,
            server_name: self.name.clone(),
            server_uuid: self.uuid.clone(),
            status: self.status,
            status_reason: self.status_reason.clone(),
            vdc_id: self.vdc_id,
            vlan_id: self.vlan_id,
            processors: self.processors,
            memory: self.memory,
            image_id: self.image_id,
            product_offer_id: self.product_offer_id,
            disks,
            initial_user: self.initial_user.clone(),
            initial_password: self.initial_password.clone(),
            created: Timestamp(self.created),
            ip_address: self.ipv4.clone(),
            mac_address: self.vlan_id.map(|_| mac_address(&self.uuid)),
            port_forwards,
            ssh_key_ids,
            node: self.node.clone(),
            status_name: ServerStatus::name_of(self.status).to_string(),
            firewall_template_id: self.firewall_template_id,
        }
    }
}

impl ServerRow {
    /// Fails with CONFLICT, saying what the server is doing (and `then`, a hint), unless its
    /// status is one of `allowed`.
    fn require_status(&self, allowed: &[ServerStatus], then: &str) -> ApiResult<()> {
        if allowed.iter().any(|s| s.code() == self.status) {
            return Ok(());
        }
        Err(ApiError::Conflict(format!(
            "server {} is {}{then}",
            self.id,
            ServerStatus::describe(self.status)
        )))
    }
}

macro_rules! select_servers {
    ($where:literal) => {
        concat!(
            "SELECT id, uuid, customer_id, vdc_id, vlan_id, name, status, status_reason, \
             processors, memory, image_id, product_offer_id, initial_user, initial_password, \
             node, created, ipv4, firewall_template_id FROM servers WHERE ",
            $where
        )
    };
}

/// Gives a server a firewall template (`None`: takes it away). The caller has checked that
/// both are the customer's.
pub async fn set_firewall_template(
    conn: &mut AnyConnection,
    server_id: i64,
    template_id: Option<i64>,
) -> ApiResult<()> {
    sqlx::query("UPDATE servers SET firewall_template_id = $1 WHERE id = $2")
        .bind(template_id)
        .bind(server_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The customer's server, or NOT_FOUND.
pub async fn own_server(
    conn: &mut AnyConnection,
    customer_id: i64,
    server_id: i64,
) -> ApiResult<ServerRow> {
    sqlx::query_as(select_servers!("id = $1 AND customer_id = $2"))
        .bind(server_id)
        .bind(customer_id)
        .fetch_optional(conn)
        .await?
        .ok_or(ApiError::not_found("server", server_id))
}

/// The disks attached to a server, in attach order.
pub async fn attached_disks(conn: &mut AnyConnection, server_id: i64) -> ApiResult<Vec<DiskRow>> {
    Ok(
        sqlx::query_as(select_disks!("server_id = $1 ORDER BY attach_index, id"))
            .bind(server_id)
            .fetch_all(conn)
            .await?,
    )
}

async fn load_server(conn: &mut AnyConnection, customer_id: i64, id: i64) -> ApiResult<Server> {
    let row = own_server(&mut *conn, customer_id, id).await?;
    let disks = attached_disks(&mut *conn, id).await?;
    let forwards = port_forward::of_server(&mut *conn, id).await?;
    let keys = ssh_key::ids_of_server(&mut *conn, id).await?;
    Ok(row.to_server(disks.iter().map(DiskRow::to_disk).collect(), forwards, keys))
}

pub async fn get_server(ctx: &Ctx, a: args::GetServer) -> ApiResult<Server> {
    let mut conn = ctx.state.db.pool().acquire().await?;
    load_server(&mut conn, ctx.customer_id(), a.server_id).await
}

pub async fn list_servers(ctx: &Ctx, a: args::ListServers) -> ApiResult<Vec<Server>> {
    list(ctx, Some(a.vdc_id), a.page_size, a.after_id, a.name).await
}

/// ListAllServers: ListServers over every VDC of the caller, in one call.
pub async fn list_all_servers(ctx: &Ctx, a: args::ListAllServers) -> ApiResult<Vec<Server>> {
    list(ctx, None, a.page_size, a.after_id, a.name).await
}

/// A page of the caller's servers in one VDC, or in all (`None`), with what they hold.
async fn list(
    ctx: &Ctx,
    vdc_id: Option<i64>,
    page_size: Option<i64>,
    after_id: Option<i64>,
    name: Option<String>,
) -> ApiResult<Vec<Server>> {
    let page = page::ascending(page_size, after_id)?;
    let name = page::NameFilter::parse("name", name.as_deref())?;
    let mut conn = ctx.state.db.pool().acquire().await?;
    if let Some(vdc_id) = vdc_id {
        vdc::ensure_own(&mut conn, ctx.customer_id(), vdc_id).await?;
    }
    let rows: Vec<ServerRow> = page::in_vdc_or_all(
        &mut conn,
        select_servers!(""),
        vdc_id,
        ctx.customer_id(),
        page,
        name,
    )
    .await?;
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(Vec::new());
    };
    // What the page's servers hold: their disks, port forwards and SSH keys. (A server's
    // disks are in its VDC, so the range of the page's ids and the customer find them.)
    let range = (first.id, last.id);
    let disks: Vec<DiskRow> = sqlx::query_as(select_disks!(
        "customer_id = $1 AND server_id BETWEEN $2 AND $3 ORDER BY attach_index, id"
    ))
    .bind(ctx.customer_id())
    .bind(range.0)
    .bind(range.1)
    .fetch_all(&mut *conn)
    .await?;
    let mut forwards = port_forward::of_vdc(&mut conn, ctx.customer_id(), vdc_id, range).await?;
    let mut keys = ssh_key::ids_of_vdc(&mut conn, ctx.customer_id(), vdc_id, range).await?;
    let mut by_server: HashMap<i64, Vec<Disk>> = HashMap::new();
    for d in &disks {
        if let Some(server_id) = d.server_id {
            by_server.entry(server_id).or_default().push(d.to_disk());
        }
    }
    Ok(rows
        .iter()
        .map(|r| {
            r.to_server(
                by_server.remove(&r.id).unwrap_or_default(),
                forwards.remove(&r.id).unwrap_or_default(),
                keys.remove(&r.id).unwrap_or_default(),
            )
        })
        .collect())
}
