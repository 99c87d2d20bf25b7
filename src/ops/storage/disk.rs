//! Disks: block devices in a VDC, attachable to one server at a time.

use sqlx::AnyConnection;

use crate::db::{Tx, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::ops::accounts::quota::{self, Need};
use crate::ops::state::AppState;
use crate::ops::storage::image::ImageRow;
use crate::ops::wire::Timestamp;
use crate::ops::{
    Ctx, accounts::vdc, args, page, storage::create_image, storage::image, storage::product_offer,
    storage::provenance, storage::usage, validate,
};
use crate::storage::{VolumeFile, volumes};
use crate::wire_struct;

wire_struct! {
    /// A disk. `capacity` is in bytes; `status` is `attached` or `available`; `media` is `disk`,
    /// or `iso` for a CD/DVD image (attached read-only as a CD-ROM).
    pub struct Disk as "Disk" {
        pub disk_id: i64,
        pub disk_name: String,
        pub disk_uuid: String,
        pub vdc_id: i64,
        pub capacity: i64,
        pub server_id: Option<i64>,
        pub status: String,
        pub media: String,
        pub image_id: Option<i64>,
        /// The format the bits were fetched in (`raw`, `iso`, `qcow2`, `vmdk`, `vhd`, `vhdx`;
        /// stored as raw whatever it was), carried to what is made from them; nil when they
        /// never came from FetchDisk.
        #[since(2)]
        pub source_format: Option<String>,
        pub created: Timestamp,
    }
}

/// A disk as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DiskRow {
    pub id: i64,
    pub uuid: String,
    pub customer_id: i64,
    pub vdc_id: i64,
    pub name: String,
    pub capacity: i64,
    pub media: String,
    pub server_id: Option<i64>,
    pub attach_index: Option<i64>,
    pub volume_id: i64,
    pub image_id: Option<i64>,
    pub origin_server_id: Option<i64>,
    pub source_format: Option<String>,
    pub created: i64,
}

impl DiskRow {
    pub fn to_disk(&self) -> Disk {
        Disk {
            disk_id: self.id,
            disk_name: self.name.clone(),
            disk_uuid: self.uuid.clone(),
            vdc_id: self.vdc_id,
            capacity: self.capacity,
            server_id: self.server_id,
            status: if self.server_id.is_some() {
                "attached"
            } else {
                "available"
            }
            .to_string(),
            media: self.media.clone(),
            image_id: self.image_id,
            source_format: self.source_format.clone(),
            created: Timestamp(self.created),
        }
    }
}

macro_rules! select_disks {
    ($where:literal) => {
        concat!(
            "SELECT id, uuid, customer_id, vdc_id, name, capacity, media, server_id, attach_index, \
             volume_id, image_id, origin_server_id, source_format, created FROM disks WHERE ",
            $where
        )
    };
}
pub(crate) use select_disks;

pub async fn list_disks(ctx: &Ctx, a: args::ListDisks) -> ApiResult<Vec<Disk>> {
    list(ctx, Some(a.vdc_id), a.page_size, a.after_id, a.name).await
}

/// ListAllDisks: ListDisks over every VDC of the caller, in one call.
pub async fn list_all_disks(ctx: &Ctx, a: args::ListAllDisks) -> ApiResult<Vec<Disk>> {
    list(ctx, None, a.page_size, a.after_id, a.name).await
}

/// A page of the caller's disks in one VDC, or in all (`None`).
async fn list(
    ctx: &Ctx,
    vdc_id: Option<i64>,
    page_size: Option<i64>,
    after_id: Option<i64>,
    name: Option<String>,
) -> ApiResult<Vec<Disk>> {
    let page = page::ascending(page_size, after_id)?;
    let name = page::NameFilter::parse("name", name.as_deref())?;
    let mut conn = ctx.state.db.pool().acquire().await?;
    if let Some(vdc_id) = vdc_id {
        vdc::ensure_own(&mut conn, ctx.customer_id(), vdc_id).await?;
    }
    let rows: Vec<DiskRow> = page::in_vdc_or_all(
        &mut conn,
        select_disks!(""),
        vdc_id,
        ctx.customer_id(),
        page,
        name,
    )
    .await?;
    Ok(rows.iter().map(DiskRow::to_disk).collect())
}

pub async fn get_disk(ctx: &Ctx, a: args::GetDisk) -> ApiResult<Disk> {
    let mut conn = ctx.state.db.pool().acquire().await?;
    Ok(own_disk(&mut conn, ctx.customer_id(), a.disk_id)
        .await?
        .to_disk())
}

/// The customer's disk, or NOT_FOUND.
pub async fn own_disk(
    conn: &mut AnyConnection,
    customer_id: i64,
    disk_id: i64,
) -> ApiResult<DiskRow> {
    sqlx::query_as(select_disks!("id = $1 AND customer_id = $2"))
        .bind(disk_id)
        .bind(customer_id)
        .fetch_optional(conn)
        .await?
        .ok_or(ApiError::not_found("disk", disk_id))
}

/// Locks the customer's disk row for the rest of the transaction (on PostgreSQL; SQLite write
/// transactions hold the database lock anyway), so that changes which check the disk and then
/// act on it are serialized. NOT_FOUND if the disk is not the customer's.
pub async fn lock_own_disk(
    conn: &mut AnyConnection,
    customer_id: i64,
    disk_id: i64,
) -> ApiResult<()> {
    let locked =
        sqlx::query("UPDATE disks SET volume_id = volume_id WHERE id = $1 AND customer_id = $2")
            .bind(disk_id)
            .bind(customer_id)
            .execute(conn)
            .await?
            .rows_affected();
    if locked == 1 {
        Ok(())
    } else {
        Err(ApiError::not_found("disk", disk_id))
    }
}

/// What a new disk is made from: nothing (blank) or an image's volume.
pub struct DiskSource {
    pub image: Option<ImageRow>,
    pub backing: Option<volumes::VolumeRow>,
}

/// Looks up the image a disk of `capacity` bytes is to be made from (0: blank) and checks it
/// fits.
pub async fn disk_source(
    conn: &mut AnyConnection,
    ctx: &Ctx,
    image_id: i64,
    capacity: i64,
) -> ApiResult<DiskSource> {
    if image_id == 0 {
        return Ok(DiskSource {
            image: None,
            backing: None,
        });
    }
    let image = image::usable_image(&mut *conn, &ctx.caller, image_id).await?;
    // An image derived from another owner's is usable only while that owner still lets its
    // bits reach the caller (revoking the source reaches every derivative).
    provenance::ensure_usable(&mut *conn, image.id, ctx.customer_id()).await?;
    if image.size > capacity {
        return Err(ApiError::invalid(
            "image_id",
            format!(
                "image {image_id} ({} bytes) does not fit on a disk of {capacity} bytes",
                image.size
            ),
        ));
    }
    let backing = match image.volume_id {
        Some(volume_id) => Some(volumes::get(&mut *conn, volume_id).await?),
        None => None,
    };
    Ok(DiskSource {
        image: Some(image),
        backing,
    })
}

/// Makes the storage of a new disk: a thin clone of the source's volume, or a blank volume.
pub async fn provision_volume(
    state: &AppState,
    source: &DiskSource,
    capacity: i64,
) -> ApiResult<VolumeFile> {
    let storage = state.storage.clone();
    let backing = source
        .backing
        .as_ref()
        .map(volumes::VolumeRow::volume_file)
        .transpose()?;
    let size = capacity as u64;
    let volume = tokio::task::spawn_blocking(move || match backing {
        Some(backing) => storage.create_thin_clone(&backing, size),
        None => storage.create_blank(size),
    })
    .await??;
    Ok(volume)
}

/// What to insert for a new disk.
pub struct NewDisk<'a> {
    pub customer_id: i64,
    pub vdc_id: i64,
    pub name: &'a str,
    pub capacity: i64,
    pub media: &'a str,
    pub volume_id: i64,
    /// The image whose bits the disk carries (its provenance): the one it is made from, or, for
    /// a clone, its source disk's.
    pub image_id: Option<i64>,
    pub product_offer_id: Option<i64>,
    pub server_id: Option<i64>,
    pub attach_index: Option<i64>,
    pub origin_server_id: Option<i64>,
    /// The format its bits were fetched in (see [`Disk::source_format`]).
    pub source_format: Option<&'a str>,
}

pub async fn insert_disk(tx: &mut Tx, disk: NewDisk<'_>) -> ApiResult<DiskRow> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO disks (uuid, customer_id, vdc_id, name, capacity, media, server_id, \
         attach_index, volume_id, image_id, product_offer_id, origin_server_id, source_format, \
         created) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(disk.customer_id)
    .bind(disk.vdc_id)
    .bind(disk.name)
    .bind(disk.capacity)
    .bind(disk.media)
    .bind(disk.server_id)
    .bind(disk.attach_index)
    .bind(disk.volume_id)
    .bind(disk.image_id)
    .bind(disk.product_offer_id)
    .bind(disk.origin_server_id)
    .bind(disk.source_format)
    .bind(now_ms())
    .fetch_one(&mut **tx)
    .await?;
    own_disk(&mut *tx, disk.customer_id, id).await
}

/// Deletes volume files made for a change that then failed, so nothing half-made stays.
pub async fn discard_volumes(state: &AppState, files: Vec<VolumeFile>) {
    volumes::delete_files(state.storage.clone(), files).await
}

pub async fn create_disk(ctx: &Ctx, a: args::CreateDisk) -> ApiResult<Disk> {
    let name = validate::name("name", &a.name)?;
    let (offer, source) = {
        let mut conn = ctx.state.db.pool().acquire().await?;
        vdc::ensure_own(&mut conn, ctx.customer_id(), a.vdc_id).await?;
        let offer = product_offer::offer_of_kind(
            &mut conn,
            a.disk_productoffer_id,
            "disk",
            "disk_productoffer_id",
        )
        .await?;
        let source = disk_source(&mut conn, ctx, a.image_id, offer.disk_size).await?;
        let need = Need::storage(offer.disk_size);
        quota::precheck(&mut conn, &ctx.state, ctx.customer_id(), need).await?;
        (offer, source)
    };
    let volume = provision_volume(&ctx.state, &source, offer.disk_size).await?;
    let inserted = async {
        let mut tx = ctx.begin_write().await?;
        let need = Need::storage(volume.size as i64);
        quota::ensure_room(&mut tx, &ctx.state, ctx.customer_id(), need).await?;
        let volume_id =
            volumes::insert(&mut tx, &volume, source.backing.as_ref().map(|b| b.id)).await?;
        let disk = insert_disk(
            &mut tx,
            NewDisk {
                customer_id: ctx.customer_id(),
                vdc_id: a.vdc_id,
                name: &name,
                capacity: volume.size as i64,
                media: source.image.as_ref().map_or("disk", |i| i.media.as_str()),
                volume_id,
                image_id: source.image.as_ref().map(|i| i.id),
                product_offer_id: Some(offer.product_offer_id),
                server_id: None,
                attach_index: None,
                origin_server_id: None,
                source_format: source
                    .image
                    .as_ref()
                    .and_then(|i| i.source_format.as_deref()),
            },
        )
        .await?;
        if let Some(image) = &source.image {
            let user = usage::ImageUser::Disk(disk.id);
            usage::record_image_use(&mut tx, ctx.customer_id(), image, user).await?;
        }
        tx.commit().await?;
        Ok::<_, ApiError>(disk)
    }
    .await;
    match inserted {
        Ok(disk) => Ok(disk.to_disk()),
        Err(err) => {
            volumes::discard_uncommitted(ctx.state.storage.clone(), vec![volume], &err).await;
            Err(err)
        }
    }
}

pub async fn delete_disk(ctx: &Ctx, a: args::DeleteDisk) -> ApiResult<i64> {
    let mut tx = ctx.begin_write().await?;
    lock_own_disk(&mut tx, ctx.customer_id(), a.disk_id).await?;
    let disk = own_disk(&mut tx, ctx.customer_id(), a.disk_id).await?;
    if let Some(server_id) = disk.server_id {
        return Err(ApiError::Conflict(format!(
            "disk {} is attached to server {server_id}; detach it first",
            disk.id
        )));
    }
    create_image::ensure_disk_not_being_imaged(&mut tx, disk.id).await?;
    let garbage = remove_disk_row(&mut tx, &disk).await?;
    tx.commit().await?;
    discard_volumes(&ctx.state, garbage).await;
    Ok(1)
}

/// Deletes a disk's row and its snapshots, and releases their volumes; returns the files to
/// delete after commit. Disks cloned from the snapshots keep the volumes they stand on.
pub async fn remove_disk_row(tx: &mut Tx, disk: &DiskRow) -> ApiResult<Vec<VolumeFile>> {
    // Snapshots first: their volumes lie below the disk's in its backing chain, so each is
    // still held by the volume above it until the disk's own release walks down the chain.
    let mut garbage = crate::ops::storage::snapshot::remove_snapshot_rows(tx, disk.id).await?;
    super::hygiene_report::forget_disk(&mut *tx, disk.id).await?;
    sqlx::query("DELETE FROM disks WHERE id = $1")
        .bind(disk.id)
        .execute(&mut **tx)
        .await?;
    garbage.extend(volumes::release(&mut *tx, disk.volume_id).await?);
    Ok(garbage)
}

/// Attaches a disk to a server at `index` (`Some`), or detaches it (`None`).
pub async fn set_attachment(
    conn: &mut AnyConnection,
    disk_id: i64,
    attachment: Option<(i64, i64)>,
) -> ApiResult<()> {
    sqlx::query("UPDATE disks SET server_id = $1, attach_index = $2 WHERE id = $3")
        .bind(attachment.map(|(server_id, _)| server_id))
        .bind(attachment.map(|(_, index)| index))
        .bind(disk_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Moves an attached disk to another place in its server's order.
pub async fn set_attach_index(conn: &mut AnyConnection, disk_id: i64, index: i64) -> ApiResult<()> {
    sqlx::query("UPDATE disks SET attach_index = $1 WHERE id = $2")
        .bind(index)
        .bind(disk_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Disks made with a server that is going away but kept (detached earlier) forget it.
pub async fn forget_origin_server(conn: &mut AnyConnection, server_id: i64) -> ApiResult<()> {
    sqlx::query("UPDATE disks SET origin_server_id = NULL WHERE origin_server_id = $1")
        .bind(server_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Points a disk at another volume if it is still on `from` (what the caller read); returns
/// whether it was.
pub async fn switch_volume(
    conn: &mut AnyConnection,
    disk_id: i64,
    from: i64,
    to: i64,
) -> ApiResult<bool> {
    let switched = sqlx::query("UPDATE disks SET volume_id = $1 WHERE id = $2 AND volume_id = $3")
        .bind(to)
        .bind(disk_id)
        .bind(from)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(switched == 1)
}

pub async fn rename_disk(ctx: &Ctx, a: args::RenameDisk) -> ApiResult<Disk> {
    let name = validate::name("name", &a.name)?;
    let mut tx = ctx.begin_write().await?;
    let renamed = sqlx::query("UPDATE disks SET name = $1 WHERE id = $2 AND customer_id = $3")
        .bind(&name)
        .bind(a.disk_id)
        .bind(ctx.customer_id())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if renamed != 1 {
        return Err(ApiError::not_found("disk", a.disk_id));
    }
    let disk = own_disk(&mut tx, ctx.customer_id(), a.disk_id).await?;
    tx.commit().await?;
    Ok(disk.to_disk())
}

/// Grows a disk to the size of a disk offer, in place: its volume file grows (a raw file is
/// lengthened, a qcow2 overlay's size raised by `qemu-img resize`), inside the transaction
/// that records it, while the disk's row and its server's are locked and the server stopped,
/// so that nothing has the file open. A growth whose transaction then fails stays in the file
/// (larger than its row says, which reads as zeros and is harmless: a later growth starts from
/// the file as it is, and nothing ever shrinks it).
pub async fn resize_disk(ctx: &Ctx, a: args::ResizeDisk) -> ApiResult<Disk> {
    let customer_id = ctx.customer_id();
    let mut tx = ctx.begin_write().await?;
    lock_own_disk(&mut tx, customer_id, a.disk_id).await?;
    let disk = own_disk(&mut tx, customer_id, a.disk_id).await?;
    let offer = product_offer::offer_of_kind(
        &mut tx,
        a.disk_productoffer_id,
        "disk",
        "disk_productoffer_id",
    )
    .await?;
    if disk.media != "disk" {
        return Err(ApiError::invalid(
            "disk_id",
            format!(
                "disk {} is a CD image (media {}); it cannot be resized",
                disk.id, disk.media
            ),
        ));
    }
    if offer.disk_size < disk.capacity {
        return Err(ApiError::invalid(
            "disk_productoffer_id",
            format!(
                "offer {} is {} bytes, smaller than disk {} ({} bytes); disks never shrink",
                offer.product_offer_id, offer.disk_size, disk.id, disk.capacity
            ),
        ));
    }
    if let Some(server_id) = disk.server_id {
        crate::ops::server_status::lock_stopped_server(&mut tx, server_id, "resizing its disk")
            .await?;
    }
    create_image::ensure_disk_not_being_imaged(&mut tx, disk.id).await?;
    let growth = offer.disk_size - disk.capacity;
    quota::ensure_room(&mut tx, &ctx.state, customer_id, Need::storage(growth)).await?;
    let volume = volumes::get(&mut tx, disk.volume_id).await?;
    // A disk's volume is its own (a snapshot freezes it and gives the disk a new one); never
    // grow what something else stands on.
    if volumes::users(&mut tx, volume.id).await? != 1 {
        return Err(ApiError::internal(anyhow::anyhow!(
            "volume {} of disk {} is shared",
            volume.id,
            disk.id
        )));
    }
    sqlx::query("UPDATE disks SET capacity = $1, product_offer_id = $2 WHERE id = $3")
        .bind(offer.disk_size)
        .bind(offer.product_offer_id)
        .bind(disk.id)
        .execute(&mut *tx)
        .await?;
    if growth > 0 {
        let file = volume.volume_file()?;
        let storage = ctx.state.storage.clone();
        let size = offer.disk_size as u64;
        tokio::task::spawn_blocking(move || storage.grow(&file, size)).await??;
        volumes::set_size(&mut tx, volume.id, size).await?;
    }
    let resized = own_disk(&mut tx, customer_id, disk.id).await?;
    tx.commit().await?;
    Ok(resized.to_disk())
}
