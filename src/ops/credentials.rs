//! Checking a customer's e-mail and password, as every API adapter does for every call.
//!
//! Passwords are argon2id hashes, which take tens of milliseconds to check by design. A client
//! polling `GetJob` would pay that on every call, so a successful check is remembered for a
//! minute under a keyed SHA-256 of the credentials (the key is random per process, so the
//! cache never holds anything a password could be recovered from cheaply).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

const TTL: Duration = Duration::from_secs(60);
const MAX_ENTRIES: usize = 10_000;

pub struct CredentialCache {
    key: [u8; 32],
    entries: Mutex<HashMap<[u8; 32], (Caller, Instant)>>,
    /// Password checks running at once. Each costs tens of milliseconds of CPU by design; a
    /// flood of wrong passwords must queue here rather than take every core.
    checks: tokio::sync::Semaphore,
}

impl Default for CredentialCache {
    fn default() -> Self {
        CredentialCache {
            key: rand::random(),
            entries: Mutex::new(HashMap::new()),
            checks: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
        }
    }
}

impl CredentialCache {
    fn fingerprint(&self, email: &str, password: &str) -> [u8; 32] {
        Sha256::new()
            .chain_update(self.key)
            .chain_update(email.as_bytes())
            .chain_update([0u8])
            .chain_update(password.as_bytes())
            .finalize()
            .into()
    }

    fn get(&self, fingerprint: &[u8; 32]) -> Option<Caller> {
        let entries = self.entries.lock().unwrap();
        entries
            .get(fingerprint)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(caller, _)| caller.clone())
    }

    fn put(&self, fingerprint: [u8; 32], caller: Caller) {
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, at)| at.elapsed() < TTL);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(fingerprint, (caller, Instant::now()));
    }
}

/// Who is calling, from an e-mail and a password (a successful check is remembered).
pub async fn authenticate(state: &AppState, email: &str, password: &str) -> ApiResult<Caller> {
    let fingerprint = state.credentials.fingerprint(email, password);
    if let Some(caller) = state.credentials.get(&fingerprint) {
        return Ok(caller);
    }
    let _slot = state
        .credentials
        .checks
        .acquire()
        .await
        .map_err(ApiError::internal)?;
    let caller = super::customer::authenticate(&state.db, email, password).await?;
    state.credentials.put(fingerprint, caller.clone());
    Ok(caller)
}
