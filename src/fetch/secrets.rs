//! Fetch credentials between FetchDisk and its job.
//!
//! A queued job may run on another node or after a restart, so its credentials must be in the
//! database; they are kept out of the job record, in `job_secrets`, sealed with the cluster
//! key (ChaCha20-Poly1305, the job id as associated data so a sealed value cannot be moved to
//! another job), and deleted when the job ends.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};

use super::FetchSource;
use crate::db::{Db, Tx};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Serialize, Deserialize)]
struct Credentials {
    user: Option<String>,
    password: Option<String>,
}

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

/// Keeps the source's credentials for the job, if it has any.
pub async fn store(
    tx: &mut Tx,
    state: &AppState,
    job_id: i64,
    source: &FetchSource,
) -> ApiResult<()> {
    if !source.has_credentials() {
        return Ok(());
    }
    let plain = serde_json::to_vec(&Credentials {
        user: source.user.clone(),
        password: source.password.clone(),
    })
    .map_err(ApiError::internal)?;
    sqlx::query("INSERT INTO job_secrets (job_id, sealed) VALUES ($1, $2)")
        .bind(job_id)
        .bind(seal(&state.secret_key, job_id, &plain)?)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The credentials kept for a job: `(user, password)`, both `None` when there are none.
pub async fn load(
    db: &Db,
    key: &[u8; 32],
    job_id: i64,
) -> ApiResult<(Option<String>, Option<String>)> {
    let sealed: Option<String> =
        sqlx::query_scalar("SELECT sealed FROM job_secrets WHERE job_id = $1")
            .bind(job_id)
            .fetch_optional(db.pool())
            .await?;
    match sealed {
        None => Ok((None, None)),
        Some(sealed) => {
            let creds: Credentials =
                serde_json::from_slice(&open(key, job_id, &sealed)?).map_err(ApiError::internal)?;
            Ok((creds.user, creds.password))
        }
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
