//! Disk snapshots: CreateDiskSnapshot, ListSnapshots, DeleteSnapshot, CloneDisk, RevertDisk.
//!
//! A snapshot freezes the disk's current volume and keeps a reference to its disk. Taking one
//! is instant and thin: the volume the disk was writing becomes the snapshot's (nothing writes
//! it again), and the disk carries on in a new, empty qcow2 overlay on top of it.
//!
//! A clone is a new disk: an overlay on the snapshot's volume. It carries the bits, and so the
//! provenance, of its disk: the image the disk was made from (`provenance`), under whose
//! product offer the clone records a usage line like a disk made from that image.
//!
//! Reverting must not point the disk at the snapshot's volume itself (the guest's writes would
//! then change the snapshot, and a second revert would not go back to it), nor copy the
//! snapshot's bytes over the disk (not thin, and over a qcow2 overlay it would leave the
//! overlay's own clusters in place). The disk instead gets a new empty overlay on the snapshot's
//! volume, and the overlay it had is released: deleted unless a later snapshot or a clone still
//! stands on it.

use sqlx::AnyConnection;

use crate::db::{Tx, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::ops::accounts::quota::{self, Need};
use crate::ops::state::AppState;
use crate::ops::storage::disk::{self, Disk, NewDisk};
use crate::ops::wire::Timestamp;
use crate::ops::{
    Ctx, accounts::vdc, args, page, server_status, storage::create_image, storage::usage, validate,
};
use crate::storage::{VolumeFile, volumes};
use crate::wire_struct;

wire_struct! {
    /// A snapshot of a disk: its contents at one moment. `size` is in bytes.
    pub struct Snapshot as "Snapshot" {
        pub snapshot_id: i64,
        pub snapshot_name: String,
        pub snapshot_uuid: String,
        pub disk_id: i64,
        pub size: i64,
        pub created: Timestamp,
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct SnapshotRow {
    id: i64,
    uuid: String,
    disk_id: i64,
    name: String,
    volume_id: i64,
    size: i64,
    created: i64,
}

impl SnapshotRow {
    fn to_snapshot(&self) -> Snapshot {
        Snapshot {
            snapshot_id: self.id,
            snapshot_name: self.name.clone(),
            snapshot_uuid: self.uuid.clone(),
            disk_id: self.disk_id,
            size: self.size,
            created: Timestamp(self.created),
        }
    }
}

macro_rules! select_snapshots {
    ($where:literal) => {
        concat!(
            "SELECT s.id, s.uuid, s.disk_id, s.name, s.volume_id, v.size, s.created \
             FROM snapshots s JOIN volumes v ON v.id = s.volume_id WHERE ",
            $where
        )
    };
}

async fn own_snapshot(
    conn: &mut AnyConnection,
    customer_id: i64,
    snapshot_id: i64,
) -> ApiResult<SnapshotRow> {
    sqlx::query_as(select_snapshots!("s.id = $1 AND s.customer_id = $2"))
        .bind(snapshot_id)
        .bind(customer_id)
        .fetch_optional(conn)
        .await?
        .ok_or(ApiError::not_found("snapshot", snapshot_id))
}

/// Refuses to change what a disk holds while a running server uses it.
async fn ensure_no_guest_writes(
    conn: &mut AnyConnection,
    disk: &disk::DiskRow,
    doing: &str,
) -> ApiResult<()> {
    match disk.server_id {
        Some(server_id) => server_status::lock_stopped_server(conn, server_id, doing).await,
        None => Ok(()),
    }
}

/// A new, empty overlay on `base` of `size` bytes, off the async runtime.
async fn new_overlay(
    state: &AppState,
    base: &volumes::VolumeRow,
    size: i64,
) -> ApiResult<VolumeFile> {
    let storage = state.storage.clone();
    let base = base.volume_file()?;
    Ok(
        tokio::task::spawn_blocking(move || storage.create_thin_clone(&base, size as u64))
            .await??,
    )
}

/// Passes `result` on; when it is a failure, first deletes the volume made for the change, so
/// that nothing half-made stays (unless the database went away: see
/// [`volumes::discard_uncommitted`]).
async fn discard_on_error<T>(
    state: &AppState,
    made: VolumeFile,
    result: ApiResult<T>,
) -> ApiResult<T> {
    if let Err(err) = &result {
        volumes::discard_uncommitted(state.storage.clone(), vec![made], err).await;
    }
    result
}

/// Moves a disk from its current volume to `volume`, failing with CONFLICT if the disk changed
/// volume since it was read (another snapshot or revert got in between).
async fn switch_volume(
    tx: &mut Tx,
    disk: &disk::DiskRow,
    volume: &VolumeFile,
    backing: i64,
) -> ApiResult<()> {
    let volume_id = volumes::insert(&mut *tx, volume, Some(backing)).await?;
    if disk::switch_volume(tx, disk.id, disk.volume_id, volume_id).await? {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!(
            "disk {} changed while this call ran; try again",
            disk.id
        )))
    }
}

pub async fn create_disk_snapshot(ctx: &Ctx, a: args::CreateDiskSnapshot) -> ApiResult<Snapshot> {
    let name = validate::name("name", &a.name)?;
    let customer_id = ctx.customer_id();
    let (disk, frozen) = {
        let mut conn = ctx.state.db.pool().acquire().await?;
        let disk = disk::own_disk(&mut conn, customer_id, a.disk_id).await?;
        let frozen = volumes::get(&mut conn, disk.volume_id).await?;
        ensure_below_snapshot_limit(&mut conn, &ctx.state, disk.id).await?;
        quota::precheck(
            &mut conn,
            &ctx.state,
            customer_id,
            Need::storage(frozen.size),
        )
        .await?;
        (disk, frozen)
    };
    let overlay = new_overlay(&ctx.state, &frozen, disk.capacity).await?;
    let result = async {
        let mut tx = ctx.begin_write().await?;
        disk::lock_own_disk(&mut tx, customer_id, disk.id).await?;
        let disk = disk::own_disk(&mut tx, customer_id, disk.id).await?;
        // A running guest writes the volume being frozen; qcow2 cannot take that over safely.
        ensure_no_guest_writes(&mut tx, &disk, "taking a snapshot of its disk").await?;
        // Under the disk's lock: two snapshots at once cannot both take its last place.
        ensure_below_snapshot_limit(&mut tx, &ctx.state, disk.id).await?;
        let need = Need::storage(frozen.size);
        quota::ensure_room(&mut tx, &ctx.state, customer_id, need).await?;
        switch_volume(&mut tx, &disk, &overlay, frozen.id).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO snapshots (uuid, customer_id, disk_id, name, volume_id, created) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(customer_id)
        .bind(disk.id)
        .bind(&name)
        .bind(frozen.id)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        let snapshot = own_snapshot(&mut tx, customer_id, id).await?;
        tx.commit().await?;
        Ok(snapshot.to_snapshot())
    }
    .await;
    discard_on_error(&ctx.state, overlay, result).await
}

/// Fails with LIMIT_EXCEEDED when the disk has `--max-snapshots-per-disk` snapshots: each is
/// a layer under the disk that its reads may go through, and a fixed bound per disk (not a
/// customer's quota) keeps that chain short.
async fn ensure_below_snapshot_limit(
    conn: &mut AnyConnection,
    state: &AppState,
    disk_id: i64,
) -> ApiResult<()> {
    let max = state.config.max_snapshots_per_disk;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM snapshots WHERE disk_id = $1")
        .bind(disk_id)
        .fetch_one(conn)
        .await?;
    if count >= max {
        return Err(ApiError::LimitExceeded(format!(
            "disk {disk_id} has {count} snapshots, the most a disk may have \
             (--max-snapshots-per-disk {max}); delete one first"
        )));
    }
    Ok(())
}

pub async fn list_snapshots(ctx: &Ctx, a: args::ListSnapshots) -> ApiResult<Vec<Snapshot>> {
    let page = page::ascending(a.page_size, a.after_id)?;
    let mut conn = ctx.state.db.pool().acquire().await?;
    disk::own_disk(&mut conn, ctx.customer_id(), a.disk_id).await?;
    let rows: Vec<SnapshotRow> = sqlx::query_as(select_snapshots!(
        "s.disk_id = $1 AND s.customer_id = $2 AND s.id > $3 ORDER BY s.id LIMIT $4"
    ))
    .bind(a.disk_id)
    .bind(ctx.customer_id())
    .bind(page.cursor)
    .bind(page.limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().map(SnapshotRow::to_snapshot).collect())
}

/// Deletes a snapshot. Its data stays as long as the disk or a clone stands on it.
pub async fn delete_snapshot(ctx: &Ctx, a: args::DeleteSnapshot) -> ApiResult<i64> {
    let mut tx = ctx.begin_write().await?;
    let snapshot = own_snapshot(&mut tx, ctx.customer_id(), a.snapshot_id).await?;
    sqlx::query("DELETE FROM snapshots WHERE id = $1")
        .bind(snapshot.id)
        .execute(&mut *tx)
        .await?;
    let garbage = volumes::release(&mut tx, snapshot.volume_id).await?;
    tx.commit().await?;
    disk::discard_volumes(&ctx.state, garbage).await;
    Ok(1)
}

/// Deletes the snapshots of a disk being deleted and releases their volumes; returns the files
/// to delete after commit.
pub async fn remove_snapshot_rows(tx: &mut Tx, disk_id: i64) -> ApiResult<Vec<VolumeFile>> {
    let volume_ids: Vec<i64> =
        sqlx::query_scalar("SELECT volume_id FROM snapshots WHERE disk_id = $1")
            .bind(disk_id)
            .fetch_all(&mut **tx)
            .await?;
    sqlx::query("DELETE FROM snapshots WHERE disk_id = $1")
        .bind(disk_id)
        .execute(&mut **tx)
        .await?;
    let mut garbage = Vec::new();
    for volume_id in volume_ids {
        garbage.extend(volumes::release(&mut *tx, volume_id).await?);
    }
    Ok(garbage)
}

pub async fn clone_disk(ctx: &Ctx, a: args::CloneDisk) -> ApiResult<Disk> {
    let name = validate::name("new_disk_name", &a.new_disk_name)?;
    let customer_id = ctx.customer_id();
    let (snapshot, source, base) = {
        let mut conn = ctx.state.db.pool().acquire().await?;
        let snapshot = own_snapshot(&mut conn, customer_id, a.snapshot_id).await?;
        vdc::ensure_own(&mut conn, customer_id, a.vdc_id).await?;
        let source = disk::own_disk(&mut conn, customer_id, snapshot.disk_id).await?;
        let base = volumes::get(&mut conn, snapshot.volume_id).await?;
        let need = Need::storage(snapshot.size);
        quota::precheck(&mut conn, &ctx.state, customer_id, need).await?;
        (snapshot, source, base)
    };
    let overlay = new_overlay(&ctx.state, &base, snapshot.size).await?;
    let result = async {
        let mut tx = ctx.begin_write().await?;
        let need = Need::storage(overlay.size as i64);
        quota::ensure_room(&mut tx, &ctx.state, customer_id, need).await?;
        let volume_id = volumes::insert(&mut tx, &overlay, Some(base.id)).await?;
        let product_offer_id: Option<i64> =
            sqlx::query_scalar("SELECT product_offer_id FROM disks WHERE id = $1")
                .bind(source.id)
                .fetch_optional(&mut *tx)
                .await?
                .flatten();
        let clone = disk::insert_disk(
            &mut tx,
            NewDisk {
                customer_id,
                vdc_id: a.vdc_id,
                name: &name,
                capacity: overlay.size as i64,
                media: &source.media,
                volume_id,
                image_id: source.image_id,
                product_offer_id,
                server_id: None,
                attach_index: None,
                origin_server_id: None,
                source_format: source.source_format.as_deref(),
            },
        )
        .await?;
        // The clone carries the bits of the image its disk was made from: billed likewise.
        if let Some(image_id) = source.image_id {
            let user = usage::ImageUser::Disk(clone.id);
            usage::record_inherited_use(&mut tx, customer_id, image_id, user).await?;
        }
        tx.commit().await?;
        Ok(clone.to_disk())
    }
    .await;
    discard_on_error(&ctx.state, overlay.clone(), result).await
}

pub async fn revert_disk(ctx: &Ctx, a: args::RevertDisk) -> ApiResult<Disk> {
    let customer_id = ctx.customer_id();
    let (snapshot, disk, base) = {
        let mut conn = ctx.state.db.pool().acquire().await?;
        let snapshot = own_snapshot(&mut conn, customer_id, a.snapshot_id).await?;
        let disk = disk::own_disk(&mut conn, customer_id, snapshot.disk_id).await?;
        let base = volumes::get(&mut conn, snapshot.volume_id).await?;
        (snapshot, disk, base)
    };
    let overlay = new_overlay(&ctx.state, &base, disk.capacity).await?;
    let result = async {
        let mut tx = ctx.begin_write().await?;
        disk::lock_own_disk(&mut tx, customer_id, disk.id).await?;
        let disk = disk::own_disk(&mut tx, customer_id, disk.id).await?;
        own_snapshot(&mut tx, customer_id, snapshot.id).await?;
        ensure_no_guest_writes(&mut tx, &disk, "reverting its disk").await?;
        create_image::ensure_disk_not_being_imaged(&mut tx, disk.id).await?;
        switch_volume(&mut tx, &disk, &overlay, base.id).await?;
        let garbage = volumes::release(&mut tx, disk.volume_id).await?;
        let reverted = disk::own_disk(&mut tx, customer_id, disk.id).await?;
        tx.commit().await?;
        Ok((reverted, garbage))
    }
    .await;
    let (reverted, garbage) = discard_on_error(&ctx.state, overlay.clone(), result).await?;
    disk::discard_volumes(&ctx.state, garbage).await;
    Ok(reverted.to_disk())
}
