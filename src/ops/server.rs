//! Servers: virtual machines made of a server product offer and attached disks.

use std::collections::HashMap;

use serde_json::json;
use sqlx::AnyConnection;

use super::disk::{self, Disk, DiskRow, NewDisk, select_disks};
use super::{Ctx, args, create_image, product_offer, usage, validate, vdc};
use crate::db::{Tx, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::hypervisor::{Media, MetadataAccess, StopMethod, VmDisk, VmEvent, VmSpec, VmState};
use crate::jobs::{JobOutcome, JobQueue, NewJob, RunningJob};
use crate::ops::wire::Timestamp;
use crate::state::AppState;
use crate::storage::volumes;
use crate::wire_struct;

/// Server status codes, as the Extility API numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub enum ServerStatus {
    Error = 1,
    Running = 2,
    Starting = 3,
    Stopping = 4,
    Stopped = 5,
}

impl ServerStatus {
    pub fn code(self) -> i64 {
        self as i64
    }

    fn describe(code: i64) -> &'static str {
        match code {
            1 => "in error",
            2 => "running",
            3 => "starting",
            4 => "stopping",
            5 => "stopped",
            _ => "in an unknown state",
        }
    }
}

wire_struct! {
    /// A server. `status`: 1 error, 2 running, 3 starting, 4 stopping, 5 stopped, with
    /// `status_reason` saying why when it is in error. `memory` is in MiB. `disks` are in attach
    /// order (the first is the boot disk). `initial_user` and `initial_password` are the
    /// first-boot credentials.
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
}

impl ServerRow {
    fn to_server(&self, disks: Vec<Disk>) -> Server {
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
        }
    }
}

macro_rules! select_servers {
    ($where:literal) => {
        concat!(
            "SELECT id, uuid, customer_id, vdc_id, vlan_id, name, status, status_reason, \
             processors, memory, image_id, product_offer_id, initial_user, initial_password, \
             node, created FROM servers WHERE ",
            $where
        )
    };
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
    Ok(row.to_server(disks.iter().map(DiskRow::to_disk).collect()))
}

pub async fn get_server(ctx: &Ctx, a: args::GetServer) -> ApiResult<Server> {
    let mut conn = ctx.state.db.pool().acquire().await?;
    load_server(&mut conn, ctx.customer_id(), a.server_id).await
}

pub async fn list_servers(ctx: &Ctx, a: args::ListServers) -> ApiResult<Vec<Server>> {
    let mut conn = ctx.state.db.pool().acquire().await?;
    vdc::ensure_own(&mut conn, ctx.customer_id(), a.vdc_id).await?;
    let rows: Vec<ServerRow> = sqlx::query_as(select_servers!(
        "vdc_id = $1 AND customer_id = $2 ORDER BY id"
    ))
    .bind(a.vdc_id)
    .bind(ctx.customer_id())
    .fetch_all(&mut *conn)
    .await?;
    let disks: Vec<DiskRow> = sqlx::query_as(select_disks!(
        "vdc_id = $1 AND customer_id = $2 AND server_id IS NOT NULL ORDER BY attach_index, id"
    ))
    .bind(a.vdc_id)
    .bind(ctx.customer_id())
    .fetch_all(&mut *conn)
    .await?;
    let mut by_server: HashMap<i64, Vec<Disk>> = HashMap::new();
    for d in &disks {
        if let Some(server_id) = d.server_id {
            by_server.entry(server_id).or_default().push(d.to_disk());
        }
    }
    Ok(rows
        .iter()
        .map(|r| r.to_server(by_server.remove(&r.id).unwrap_or_default()))
        .collect())
}

/// A random first-boot password: 16 characters, without look-alikes (0/O, 1/l/I).
fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..16)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub async fn create_server(ctx: &Ctx, a: args::CreateServer) -> ApiResult<Server> {
    let name = validate::name("server_name", &a.server_name)?;
    let customer_id = ctx.customer_id();
    if a.disk_productoffer_ids.is_empty() {
        return Err(ApiError::invalid(
            "disk_productoffer_ids",
            "must name at least one disk product offer (the boot disk)",
        ));
    }
    if a.disk_productoffer_ids.len() > 16 {
        return Err(ApiError::invalid(
            "disk_productoffer_ids",
            "may name at most 16 disk product offers",
        ));
    }
    // Check everything before making any storage.
    let (server_offer, disk_offers, source) = {
        let mut conn = ctx.state.db.pool().acquire().await?;
        vdc::ensure_own(&mut conn, customer_id, a.vdc_id).await?;
        if a.vlan_id != -1 {
            let vlan: Option<i64> =
                sqlx::query_scalar("SELECT vdc_id FROM vlans WHERE id = $1 AND customer_id = $2")
                    .bind(a.vlan_id)
                    .bind(customer_id)
                    .fetch_optional(&mut *conn)
                    .await?;
            match vlan {
                None => return Err(ApiError::not_found("VLAN", a.vlan_id)),
                Some(vdc_id) if vdc_id != a.vdc_id => {
                    return Err(ApiError::invalid(
                        "vlan_id",
                        format!(
                            "VLAN {} is in VDC {vdc_id}, not in VDC {}",
                            a.vlan_id, a.vdc_id
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        let server_offer = product_offer::offer_of_kind(
            &mut conn,
            a.server_productoffer_id,
            "server",
            "server_productoffer_id",
        )
        .await?;
        let mut disk_offers = Vec::new();
        for (i, id) in a.disk_productoffer_ids.iter().enumerate() {
            let argument = format!("disk_productoffer_ids[{i}]");
            disk_offers
                .push(product_offer::offer_of_kind(&mut conn, *id, "disk", &argument).await?);
        }
        let source =
            disk::disk_source(&mut conn, ctx, a.image_id, disk_offers[0].disk_size).await?;
        (server_offer, disk_offers, source)
    };

    // Storage: the boot disk from the image, then blank disks.
    let mut made = Vec::new();
    let mut provisioned = async {
        made.push(disk::provision_volume(&ctx.state, &source, disk_offers[0].disk_size).await?);
        let blank = disk::DiskSource {
            image: None,
            backing: None,
        };
        for offer in &disk_offers[1..] {
            made.push(disk::provision_volume(&ctx.state, &blank, offer.disk_size).await?);
        }
        Ok::<_, ApiError>(())
    }
    .await;

    let image = source.image.as_ref();
    let mut server_id = 0;
    if provisioned.is_ok() {
        provisioned = async {
            let mut tx = ctx.state.db.begin_write().await?;
            server_id = sqlx::query_scalar(
                "INSERT INTO servers (uuid, customer_id, vdc_id, vlan_id, name, status, processors, \
                 memory, image_id, product_offer_id, initial_user, initial_password, created) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
            )
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(customer_id)
            .bind(a.vdc_id)
            .bind((a.vlan_id != -1).then_some(a.vlan_id))
            .bind(&name)
            .bind(ServerStatus::Stopped.code())
            .bind(server_offer.processors)
            .bind(server_offer.memory)
            .bind(image.map(|i| i.id))
            .bind(server_offer.product_offer_id)
            .bind(image.and_then(|i| i.default_username.clone()))
            .bind(image.is_none_or(|i| i.generate_password != 0).then(generate_password))
            .bind(now_ms())
            .fetch_one(&mut *tx)
            .await?;
            for (index, (volume, offer)) in made.iter().zip(&disk_offers).enumerate() {
                let boot = index == 0;
                let backing = if boot { source.backing.as_ref().map(|b| b.id) } else { None };
                let volume_id = volumes::insert(&mut tx, volume, backing).await?;
                let disk_name = if boot {
                    format!("{name} boot disk")
                } else {
                    format!("{name} disk {}", index + 1)
                };
                disk::insert_disk(
                    &mut tx,
                    NewDisk {
                        customer_id,
                        vdc_id: a.vdc_id,
                        name: &disk_name,
                        capacity: volume.size as i64,
                        media: if boot { image.map_or("disk", |i| i.media.as_str()) } else { "disk" },
                        volume_id,
                        image_id: if boot { image.map(|i| i.id) } else { None },
                        product_offer_id: Some(offer.product_offer_id),
                        server_id: Some(server_id),
                        attach_index: Some(index as i64),
                        origin_server_id: Some(server_id),
                    },
                )
                .await?;
            }
            if let Some(image) = image {
                usage::record_image_use(&mut tx, customer_id, image, server_id)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        }
        .await;
    }
    if let Err(err) = provisioned {
        disk::discard_volumes(&ctx.state, made).await;
        return Err(err);
    }
    let mut conn = ctx.state.db.pool().acquire().await?;
    load_server(&mut conn, customer_id, server_id).await
}

/// Refuses a change to a server's disks unless it is stopped (or in error, which means its VM
/// is gone): the hypervisors here do not hot-plug disks.
fn require_stopped(server: &ServerRow, doing: &str) -> ApiResult<()> {
    if server.status == ServerStatus::Stopped.code() || server.status == ServerStatus::Error.code()
    {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!(
            "server {} is {}; stop it before {doing}",
            server.id,
            ServerStatus::describe(server.status)
        )))
    }
}

/// Locks the server's row for the rest of the transaction (on PostgreSQL; SQLite write
/// transactions hold the database lock anyway), so that a change which checks the server and
/// then acts is serialized with others doing the same.
async fn lock_server_row(conn: &mut AnyConnection, server_id: i64) -> ApiResult<()> {
    sqlx::query("UPDATE servers SET status = status WHERE id = $1")
        .bind(server_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Locks a server that must stay stopped (or in error: no VM) for what the caller is about to
/// do, and fails with CONFLICT if it is not. On PostgreSQL the conditional update waits for a
/// concurrent start to commit and then sees its status.
pub async fn lock_stopped_server(
    conn: &mut AnyConnection,
    server_id: i64,
    doing: &str,
) -> ApiResult<()> {
    let locked =
        sqlx::query("UPDATE servers SET status = status WHERE id = $1 AND status IN ($2, $3)")
            .bind(server_id)
            .bind(ServerStatus::Stopped.code())
            .bind(ServerStatus::Error.code())
            .execute(&mut *conn)
            .await?
            .rows_affected();
    if locked == 1 {
        return Ok(());
    }
    let status: Option<i64> = sqlx::query_scalar("SELECT status FROM servers WHERE id = $1")
        .bind(server_id)
        .fetch_optional(conn)
        .await?;
    Err(ApiError::Conflict(format!(
        "server {server_id} is {}; stop it before {doing}",
        ServerStatus::describe(status.unwrap_or(0))
    )))
}

pub async fn attach_disk(ctx: &Ctx, a: args::AttachDisk) -> ApiResult<i64> {
    let mut tx = ctx.state.db.begin_write().await?;
    let server = own_server(&mut tx, ctx.customer_id(), a.server_id).await?;
    let disk = disk::own_disk(&mut tx, ctx.customer_id(), a.disk_id).await?;
    match disk.server_id {
        Some(id) if id == server.id => {
            return Err(ApiError::Conflict(format!(
                "disk {} is already attached to server {id}",
                disk.id
            )));
        }
        Some(id) => {
            return Err(ApiError::Conflict(format!(
                "disk {} is attached to server {id}; detach it first",
                disk.id
            )));
        }
        None => {}
    }
    if disk.vdc_id != server.vdc_id {
        return Err(ApiError::invalid(
            "disk_id",
            format!(
                "disk {} is in VDC {}, server {} in VDC {}",
                disk.id, disk.vdc_id, server.id, server.vdc_id
            ),
        ));
    }
    require_stopped(&server, "attaching disks")?;
    let attached = attached_disks(&mut tx, server.id).await?;
    if attached.len() >= 16 {
        return Err(ApiError::LimitExceeded(format!(
            "server {} already has 16 disks",
            server.id
        )));
    }
    let count = attached.len() as i64;
    let index = match a.index {
        None => count,
        Some(i) if (0..=count).contains(&i) => i,
        Some(i) => {
            return Err(ApiError::invalid(
                "index",
                format!("must be between 0 and {count}, got {i}"),
            ));
        }
    };
    // Make room at `index`, then put the disk there.
    for d in attached
        .iter()
        .filter(|d| d.attach_index.unwrap_or(0) >= index)
    {
        sqlx::query("UPDATE disks SET attach_index = $1 WHERE id = $2")
            .bind(d.attach_index.unwrap_or(0) + 1)
            .bind(d.id)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("UPDATE disks SET server_id = $1, attach_index = $2 WHERE id = $3")
        .bind(server.id)
        .bind(index)
        .bind(disk.id)
        .execute(&mut *tx)
        .await?;
    renumber_disks(&mut tx, server.id).await?;
    tx.commit().await?;
    Ok(1)
}

/// Keeps attach indexes 0, 1, 2, ... with no gaps.
async fn renumber_disks(tx: &mut Tx, server_id: i64) -> ApiResult<()> {
    for (i, d) in attached_disks(&mut *tx, server_id)
        .await?
        .iter()
        .enumerate()
    {
        if d.attach_index != Some(i as i64) {
            sqlx::query("UPDATE disks SET attach_index = $1 WHERE id = $2")
                .bind(i as i64)
                .bind(d.id)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

pub async fn detach_disk(ctx: &Ctx, a: args::DetachDisk) -> ApiResult<i64> {
    let mut tx = ctx.state.db.begin_write().await?;
    let server = own_server(&mut tx, ctx.customer_id(), a.server_id).await?;
    let disk = disk::own_disk(&mut tx, ctx.customer_id(), a.disk_id).await?;
    if disk.server_id != Some(server.id) {
        return Err(ApiError::Conflict(format!(
            "disk {} is not attached to server {}",
            disk.id, server.id
        )));
    }
    require_stopped(&server, "detaching disks")?;
    sqlx::query("UPDATE disks SET server_id = NULL, attach_index = NULL WHERE id = $1")
        .bind(disk.id)
        .execute(&mut *tx)
        .await?;
    renumber_disks(&mut tx, server.id).await?;
    tx.commit().await?;
    Ok(1)
}

async fn set_status(
    conn: &mut AnyConnection,
    server_id: i64,
    status: ServerStatus,
    reason: Option<&str>,
) -> ApiResult<()> {
    sqlx::query("UPDATE servers SET status = $1, status_reason = $2 WHERE id = $3")
        .bind(status.code())
        .bind(reason)
        .bind(server_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records that the server's VM no longer runs. The secret it read its metadata with ends
/// with it: the next start hands out a new one.
async fn vm_gone(
    conn: &mut AnyConnection,
    server_id: i64,
    status: ServerStatus,
    reason: Option<&str>,
) -> ApiResult<()> {
    sqlx::query(
        "UPDATE servers SET status = $1, status_reason = $2, metadata_token = NULL WHERE id = $3",
    )
    .bind(status.code())
    .bind(reason)
    .bind(server_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves a server into a transitional status and queues the job that finishes the move, in
/// one transaction.
async fn queue_server_job(
    ctx: &Ctx,
    mut tx: Tx,
    server: &ServerRow,
    status: ServerStatus,
    job_type: &'static str,
    verb: &str,
    params: serde_json::Value,
) -> ApiResult<i64> {
    set_status(&mut tx, server.id, status, None).await?;
    let job_id = JobQueue::enqueue(
        &mut tx,
        NewJob {
            customer_id: ctx.customer_id(),
            job_type,
            name: format!("{verb} server \"{}\"", server.name),
            item_type: Some("server"),
            item_id: Some(server.id),
            params,
        },
    )
    .await?;
    tx.commit().await?;
    ctx.state.jobs.wake();
    Ok(job_id)
}

pub async fn start_server(ctx: &Ctx, a: args::StartServer) -> ApiResult<i64> {
    let mut tx = ctx.state.db.begin_write().await?;
    let server = own_server(&mut tx, ctx.customer_id(), a.server_id).await?;
    lock_server_row(&mut tx, server.id).await?;
    let server = own_server(&mut tx, ctx.customer_id(), a.server_id).await?;
    if server.status != ServerStatus::Stopped.code() && server.status != ServerStatus::Error.code()
    {
        return Err(ApiError::Conflict(format!(
            "server {} is {}",
            server.id,
            ServerStatus::describe(server.status)
        )));
    }
    create_image::ensure_server_disks_not_being_imaged(&mut tx, server.id).await?;
    queue_server_job(
        ctx,
        tx,
        &server,
        ServerStatus::Starting,
        "StartServer",
        "Start",
        json!({}),
    )
    .await
}

pub async fn stop_server(ctx: &Ctx, a: args::StopServer) -> ApiResult<i64> {
    let method = match a.stop_method {
        1 => "shutdown",
        2 => "poweroff",
        other => {
            return Err(ApiError::invalid(
                "stop_method",
                format!("must be 1 (shut down) or 2 (power off), got {other}"),
            ));
        }
    };
    let mut tx = ctx.state.db.begin_write().await?;
    let server = own_server(&mut tx, ctx.customer_id(), a.server_id).await?;
    if server.status != ServerStatus::Running.code() && server.status != ServerStatus::Error.code()
    {
        return Err(ApiError::Conflict(format!(
            "server {} is {}",
            server.id,
            ServerStatus::describe(server.status)
        )));
    }
    queue_server_job(
        ctx,
        tx,
        &server,
        ServerStatus::Stopping,
        "StopServer",
        "Stop",
        json!({ "method": method }),
    )
    .await
}

pub async fn destroy_server(ctx: &Ctx, a: args::DestroyServer) -> ApiResult<i64> {
    let mut tx = ctx.state.db.begin_write().await?;
    let server = own_server(&mut tx, ctx.customer_id(), a.server_id).await?;
    lock_server_row(&mut tx, server.id).await?;
    let server = own_server(&mut tx, ctx.customer_id(), a.server_id).await?;
    create_image::ensure_server_disks_not_being_imaged(&mut tx, server.id).await?;
    if server.status == ServerStatus::Starting.code()
        || server.status == ServerStatus::Stopping.code()
    {
        return Err(ApiError::Conflict(format!(
            "server {} is {}; try again when it has finished",
            server.id,
            ServerStatus::describe(server.status)
        )));
    }
    queue_server_job(
        ctx,
        tx,
        &server,
        ServerStatus::Stopping,
        "DestroyServer",
        "Destroy",
        json!({}),
    )
    .await
}

/// The server a server job is about.
async fn job_server(job: &RunningJob) -> ApiResult<ServerRow> {
    let server_id = job
        .row
        .item_id
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("server job without a server")))?;
    let mut conn = job.state.db.pool().acquire().await?;
    own_server(&mut conn, job.row.customer_id, server_id).await
}

fn outcome(server: &ServerRow) -> JobOutcome {
    JobOutcome {
        item_type: Some("server"),
        item_id: Some(server.id),
    }
}

/// What the hypervisor needs to boot the server: its disks in attach order, its NIC, and the
/// secret that lets the VM read its metadata. The secret is new at every start; only its hash
/// is stored.
async fn vm_spec(state: &AppState, server: &ServerRow) -> ApiResult<VmSpec> {
    let mut conn = state.db.pool().acquire().await?;
    let mut disks = Vec::new();
    for d in attached_disks(&mut conn, server.id).await? {
        let volume = volumes::get(&mut conn, d.volume_id).await?.volume_file()?;
        disks.push(VmDisk {
            path: state.storage.path(&volume),
            format: volume.format,
            media: if d.media == "iso" {
                Media::Iso
            } else {
                Media::Disk
            },
        });
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    sqlx::query("UPDATE servers SET metadata_token = $1 WHERE id = $2")
        .bind(crate::api::metadata::token_hash(&token))
        .bind(server.id)
        .execute(&mut *conn)
        .await?;
    Ok(VmSpec {
        server_uuid: server.uuid.clone(),
        name: server.name.clone(),
        processors: server.processors.max(1) as u32,
        memory_mb: server.memory.max(64) as u64,
        disks,
        nic: server.vlan_id.map(|vlan_id| crate::hypervisor::VmNic {
            vlan_id,
            mac: mac_address(&server.uuid),
        }),
        metadata: Some(MetadataAccess {
            url: format!("{}/metadata/v1/server.xml", state.base_url()),
            token,
        }),
    })
}

/// A stable, locally administered MAC address derived from the server's uuid.
fn mac_address(server_uuid: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(server_uuid.as_bytes());
    format!("52:54:00:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2])
}

pub async fn run_start_job(job: &RunningJob) -> ApiResult<JobOutcome> {
    let state = &job.state;
    let server = job_server(job).await?;
    let mut conn = state.db.pool().acquire().await?;
    if let Err(err) = job.check_cancelled() {
        set_status(&mut conn, server.id, ServerStatus::Stopped, None).await?;
        return Err(err);
    }
    let hypervisor = state.hypervisor.clone();
    let uuid = server.uuid.clone();
    // A start resumed after a restart may find the VM already up.
    let already = tokio::task::spawn_blocking(move || hypervisor.state(&uuid)).await?;
    if already != VmState::Running {
        let spec = vm_spec(state, &server).await?;
        let hypervisor = state.hypervisor.clone();
        let started = tokio::task::spawn_blocking(move || hypervisor.start(&spec)).await?;
        if let Err(err) = started {
            vm_gone(&mut conn, server.id, ServerStatus::Error, Some(&err.0)).await?;
            return Err(err.into());
        }
    }
    // Only from "starting": a VM that has already ended on its own was recorded as such by
    // `record_vm_event`, and stays so.
    sqlx::query(
        "UPDATE servers SET status = $1, status_reason = NULL, node = $2 WHERE id = $3 \
         AND status = $4",
    )
    .bind(ServerStatus::Running.code())
    .bind(&state.jobs.node_id)
    .bind(server.id)
    .bind(ServerStatus::Starting.code())
    .execute(&mut *conn)
    .await?;
    Ok(outcome(&server))
}

async fn power_off(state: &AppState, server: &ServerRow, method: StopMethod) -> ApiResult<()> {
    let hypervisor = state.hypervisor.clone();
    let uuid = server.uuid.clone();
    tokio::task::spawn_blocking(move || hypervisor.stop(&uuid, method)).await??;
    Ok(())
}

pub async fn run_stop_job(job: &RunningJob) -> ApiResult<JobOutcome> {
    let state = &job.state;
    let server = job_server(job).await?;
    let method = match job.row.params()?.get("method").and_then(|m| m.as_str()) {
        Some("shutdown") => StopMethod::Shutdown,
        _ => StopMethod::PowerOff,
    };
    let mut conn = state.db.pool().acquire().await?;
    if let Err(err) = power_off(state, &server, method).await {
        set_status(
            &mut conn,
            server.id,
            ServerStatus::Error,
            Some(&err.to_string()),
        )
        .await?;
        return Err(err);
    }
    vm_gone(&mut conn, server.id, ServerStatus::Stopped, None).await?;
    Ok(outcome(&server))
}

pub async fn run_destroy_job(job: &RunningJob) -> ApiResult<JobOutcome> {
    let state = &job.state;
    let server = job_server(job).await?;
    let hypervisor = state.hypervisor.clone();
    let uuid = server.uuid.clone();
    // Powers the VM off if it runs and removes its files (console log, ...).
    if let Err(err) = tokio::task::spawn_blocking(move || hypervisor.discard(&uuid)).await? {
        let mut conn = state.db.pool().acquire().await?;
        set_status(&mut conn, server.id, ServerStatus::Error, Some(&err.0)).await?;
        return Err(err.into());
    }
    let mut tx = state.db.begin_write().await?;
    let mut garbage = Vec::new();
    for d in attached_disks(&mut tx, server.id).await? {
        if d.origin_server_id == Some(server.id) {
            garbage.extend(disk::remove_disk_row(&mut tx, &d).await?);
        } else {
            sqlx::query("UPDATE disks SET server_id = NULL, attach_index = NULL WHERE id = $1")
                .bind(d.id)
                .execute(&mut *tx)
                .await?;
        }
    }
    sqlx::query("UPDATE disks SET origin_server_id = NULL WHERE origin_server_id = $1")
        .bind(server.id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM servers WHERE id = $1")
        .bind(server.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    disk::discard_volumes(state, garbage).await;
    Ok(outcome(&server))
}

/// Records a VM that ended on its own: a running server (or one whose start job has not yet
/// recorded it running) becomes stopped, or in error with the reason. A server being stopped
/// or destroyed is left to its job.
pub async fn record_vm_event(state: &AppState, event: VmEvent) -> ApiResult<()> {
    let (status, reason) = match &event.state {
        VmState::Running => return Ok(()),
        VmState::Stopped => (ServerStatus::Stopped, None),
        VmState::Failed(reason) => (ServerStatus::Error, Some(reason.as_str())),
    };
    let recorded = sqlx::query(
        "UPDATE servers SET status = $1, status_reason = $2, metadata_token = NULL \
         WHERE uuid = $3 AND (status = $4 OR status = $5)",
    )
    .bind(status.code())
    .bind(reason)
    .bind(&event.server_uuid)
    .bind(ServerStatus::Running.code())
    .bind(ServerStatus::Starting.code())
    .execute(state.db.pool())
    .await?;
    if recorded.rows_affected() > 0 {
        tracing::info!(server = %event.server_uuid, status = status.code(), reason,
            "a server's VM ended on its own");
    }
    Ok(())
}

/// After a restart: servers this node ran are taken back under supervision if their VM still
/// runs, or marked stopped: never a stale "running".
pub async fn recover_servers(state: &AppState) -> ApiResult<()> {
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, uuid FROM servers WHERE status = $1 AND node = $2")
            .bind(ServerStatus::Running.code())
            .bind(&state.jobs.node_id)
            .fetch_all(state.db.pool())
            .await?;
    for (id, uuid) in rows {
        let hypervisor = state.hypervisor.clone();
        let found = tokio::task::spawn_blocking(move || hypervisor.adopt(&uuid)).await?;
        let mut conn = state.db.pool().acquire().await?;
        match found {
            VmState::Running => {
                tracing::info!(server_id = id, "server still running; supervising it again")
            }
            VmState::Stopped => {
                tracing::info!(server_id = id, "server's VM is gone; marking it stopped");
                vm_gone(&mut conn, id, ServerStatus::Stopped, None).await?;
            }
            VmState::Failed(reason) => {
                tracing::warn!(server_id = id, %reason, "server's VM could not be taken back");
                vm_gone(&mut conn, id, ServerStatus::Error, Some(&reason)).await?;
            }
        }
    }
    Ok(())
}

/// How much of the serial console GetConsoleLog returns.
pub const CONSOLE_LOG_BYTES: usize = 64 * 1024;

pub async fn get_console_log(ctx: &Ctx, a: args::GetConsoleLog) -> ApiResult<String> {
    let server = {
        let mut conn = ctx.state.db.pool().acquire().await?;
        own_server(&mut conn, ctx.customer_id(), a.server_id).await?
    };
    let hypervisor = ctx.state.hypervisor.clone();
    let bytes = tokio::task::spawn_blocking(move || {
        hypervisor.console_log(&server.uuid, CONSOLE_LOG_BYTES)
    })
    .await??;
    Ok(console_text(&bytes))
}

/// Console output as text any JSON or XML reader takes: bytes that are not UTF-8 become
/// U+FFFD, line ends become `\n`, and control characters other than tab and newline (which XML
/// 1.0 cannot carry, like the ESC of terminal colours) become their Unicode control pictures
/// (`␛`).
fn console_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .replace("\r\n", "\n")
        .chars()
        .map(|c| match c {
            '\t' | '\n' => c,
            '\u{0}'..='\u{1f}' => char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'),
            '\u{7f}' => '\u{2421}',
            _ => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::console_text;

    #[test]
    fn console_text_is_safe_for_xml() {
        assert_eq!(console_text(b"boot\r\nok\tdone\n"), "boot\nok\tdone\n");
        assert_eq!(
            console_text(b"\x1b[1mX\x00\xff"),
            "\u{241b}[1mX\u{2400}\u{fffd}"
        );
    }
}
