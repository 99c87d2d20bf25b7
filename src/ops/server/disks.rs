//! Attaching and detaching disks, which needs the server stopped: no hot-plug here.

use super::*;

/// Refuses a change to a server's disks unless it is stopped (or in error, which means its VM
/// is gone): the hypervisors here do not hot-plug disks.
fn require_stopped(server: &ServerRow, doing: &str) -> ApiResult<()> {
    let stopped = [ServerStatus::Stopped, ServerStatus::Error];
    server.require_status(&stopped, &format!("; stop it before {doing}"))
}

/// Locks the server's row for the rest of the transaction (on PostgreSQL; SQLite write
/// transactions hold the database lock anyway), so that a change which checks the server and
/// then acts is serialized with others doing the same.
pub(super) async fn lock_server_row(conn: &mut AnyConnection, server_id: i64) -> ApiResult<()> {
    sqlx::query("UPDATE servers SET status = status WHERE id = $1")
        .bind(server_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn attach_disk(ctx: &Ctx, a: args::AttachDisk) -> ApiResult<i64> {
    let mut tx = ctx.begin_write().await?;
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
        disk::set_attach_index(&mut tx, d.id, d.attach_index.unwrap_or(0) + 1).await?;
    }
    disk::set_attachment(&mut tx, disk.id, Some((server.id, index))).await?;
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
            disk::set_attach_index(tx, d.id, i as i64).await?;
        }
    }
    Ok(())
}

pub async fn detach_disk(ctx: &Ctx, a: args::DetachDisk) -> ApiResult<i64> {
    let mut tx = ctx.begin_write().await?;
    let server = own_server(&mut tx, ctx.customer_id(), a.server_id).await?;
    let disk = disk::own_disk(&mut tx, ctx.customer_id(), a.disk_id).await?;
    if disk.server_id != Some(server.id) {
        return Err(ApiError::Conflict(format!(
            "disk {} is not attached to server {}",
            disk.id, server.id
        )));
    }
    require_stopped(&server, "detaching disks")?;
    disk::set_attachment(&mut tx, disk.id, None).await?;
    renumber_disks(&mut tx, server.id).await?;
    tx.commit().await?;
    Ok(1)
}
