//! Secrets a job needs (FetchDisk's credentials), between the operation that queues it and the
//! attempt that runs it.
//!
//! A queued job may run on another node or after a restart, so its secrets must be in the
//! database; they are kept out of the job record, in `job_secrets`, sealed with the cluster
//! key (ChaCha20-Poly1305, the job id as associated data so a sealed value cannot be moved to
//! another job), and deleted when the job ends (`queue::finish`, `queue::request_cancel`).

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::db::{Db, Tx};
use crate::error::{ApiError, ApiResult};

fn cipher(key: &[u8; 32]) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(&Key::from(*key))
}

fn seal(key: &[u8; 32], job_id: i64, plain: &[u8]) -> ApiResult<String> {
    let nonce: [u8; 12] = rand::random();
    let sealed = cipher(key)
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plain,
                aad: &job_id.to_le_bytes(),
            },
        )
        .map_err(|_| ApiError::internal(anyhow::anyhow!("sealing job secrets failed")))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(base64::engine::general_purpose::STANDARD.encode(out))
}

fn open(key: &[u8; 32], job_id: i64, sealed: &str) -> ApiResult<Vec<u8>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(ApiError::internal)?;
    if bytes.len() < 12 {
        return Err(ApiError::internal(anyhow::anyhow!(
            "sealed secret too short"
        )));
    }
    let (nonce, sealed) = bytes.split_at(12);
    cipher(key)
        .decrypt(
            &Nonce::try_from(nonce).map_err(ApiError::internal)?,
            Payload {
                msg: sealed,
                aad: &job_id.to_le_bytes(),
            },
        )
        .map_err(|_| {
            ApiError::Interrupted(
                "the job's credentials cannot be read on this node (different secret key); \
                 submit the fetch again"
                    .into(),
            )
        })
}

/// Keeps a job's secret, sealed.
pub(super) async fn store<S: Serialize>(
    tx: &mut Tx,
    key: &[u8; 32],
    job_id: i64,
    secret: &S,
) -> ApiResult<()> {
    let plain = serde_json::to_vec(secret).map_err(ApiError::internal)?;
    sqlx::query("INSERT INTO job_secrets (job_id, sealed) VALUES ($1, $2)")
        .bind(job_id)
        .bind(seal(key, job_id, &plain)?)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The secret kept for a job, if it has one.
pub(super) async fn load<S: DeserializeOwned>(
    db: &Db,
    key: &[u8; 32],
    job_id: i64,
) -> ApiResult<Option<S>> {
    let sealed: Option<String> =
        sqlx::query_scalar("SELECT sealed FROM job_secrets WHERE job_id = $1")
            .bind(job_id)
            .fetch_optional(db.pool())
            .await?;
    match sealed {
        None => Ok(None),
        Some(sealed) => serde_json::from_slice(&open(key, job_id, &sealed)?)
            .map(Some)
            .map_err(ApiError::internal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_the_key_and_job() {
        let key = [7u8; 32];
        let sealed = seal(&key, 5, b"hunter2").unwrap();
        assert!(!sealed.contains("hunter2"));
        assert_eq!(open(&key, 5, &sealed).unwrap(), b"hunter2");
        assert!(open(&key, 6, &sealed).is_err());
        assert!(open(&[8u8; 32], 5, &sealed).is_err());
    }
}
