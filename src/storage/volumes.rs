//! The database's record of volumes, and the rule that keeps them alive: a volume stays while a
//! disk, image or snapshot uses it or another volume is a thin clone of it.

use std::sync::Arc;

use sqlx::AnyConnection;

use super::{Storage, VolumeFile, VolumeFormat};
use crate::db::now_ms;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VolumeRow {
    pub id: i64,
    pub file: String,
    pub format: String,
    pub size: i64,
    pub backing_volume_id: Option<i64>,
}

impl VolumeRow {
    pub fn volume_file(&self) -> ApiResult<VolumeFile> {
        Ok(VolumeFile {
            file: self.file.clone(),
            format: VolumeFormat::parse(&self.format).ok_or_else(|| {
                ApiError::internal(anyhow::anyhow!(
                    "volume {} has format {}",
                    self.id,
                    self.format
                ))
            })?,
            size: self.size as u64,
        })
    }
}

pub async fn insert(
    conn: &mut AnyConnection,
    volume: &VolumeFile,
    backing_volume_id: Option<i64>,
) -> ApiResult<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO volumes (file, format, size, backing_volume_id, created) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(&volume.file)
    .bind(volume.format.as_str())
    .bind(volume.size as i64)
    .bind(backing_volume_id)
    .bind(now_ms())
    .fetch_one(conn)
    .await?)
}

pub async fn get(conn: &mut AnyConnection, id: i64) -> ApiResult<VolumeRow> {
    sqlx::query_as::<_, VolumeRow>(
        "SELECT id, file, format, size, backing_volume_id FROM volumes WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| ApiError::internal(anyhow::anyhow!("volume {id} is missing")))
}

/// Records the size a volume was grown to ([`super::Storage::grow`]).
pub async fn set_size(conn: &mut AnyConnection, id: i64, size: u64) -> ApiResult<()> {
    sqlx::query("UPDATE volumes SET size = $1 WHERE id = $2")
        .bind(size as i64)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// How many things use a volume: the disks, images and snapshots on it and the volumes that
/// are thin clones of it.
pub async fn users(conn: &mut AnyConnection, id: i64) -> ApiResult<i64> {
    Ok(sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM disks WHERE volume_id = $1) \
              + (SELECT COUNT(*) FROM images WHERE volume_id = $1) \
              + (SELECT COUNT(*) FROM snapshots WHERE volume_id = $1) \
              + (SELECT COUNT(*) FROM volumes WHERE backing_volume_id = $1)",
    )
    .bind(id)
    .fetch_one(conn)
    .await?)
}

/// Forgets `id` and then each volume down its backing chain for as long as nothing else uses
/// them. Returns the files to delete once the transaction has committed.
pub async fn release(conn: &mut AnyConnection, id: i64) -> ApiResult<Vec<VolumeFile>> {
    let mut garbage = Vec::new();
    let mut next = Some(id);
    while let Some(id) = next {
        if users(&mut *conn, id).await? > 0 {
            break;
        }
        let row = get(&mut *conn, id).await?;
        sqlx::query("DELETE FROM volumes WHERE id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
        garbage.push(row.volume_file()?);
        next = row.backing_volume_id;
    }
    Ok(garbage)
}

/// Deletes the files made for a change that failed with `err`, unless the database went away
/// under it: the change may then have been committed after all (a commit whose answer was
/// lost), with rows naming the files. Those files are left to the orphan sweep, which deletes
/// them once no row names them.
pub async fn discard_uncommitted(
    storage: Arc<dyn Storage>,
    files: Vec<VolumeFile>,
    err: &ApiError,
) {
    if err.is_database_unavailable() {
        for file in &files {
            tracing::warn!(file = %file.file, error = %err,
                "the database went away; leaving a volume file that may be committed to the orphan sweep");
        }
        return;
    }
    delete_files(storage, files).await
}

/// Deletes released files, off the async runtime. A failure is logged, not returned: the
/// database no longer refers to the file, so it is only wasted space.
pub async fn delete_files(storage: Arc<dyn Storage>, files: Vec<VolumeFile>) {
    if files.is_empty() {
        return;
    }
    let _ = tokio::task::spawn_blocking(move || {
        for file in files {
            if let Err(err) = storage.delete(&file) {
                tracing::warn!(file = %file.file, error = %err, "could not delete a volume file");
            }
        }
    })
    .await;
}
