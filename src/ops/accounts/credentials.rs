//! Checking a customer's e-mail and password, as every API adapter does for every call.
//!
//! Passwords are argon2id hashes, which take tens of milliseconds to check by design. A client
//! polling `GetJob` would pay that on every call, so a successful check is remembered for a
//! minute under a keyed SHA-256 of the credentials (the key is random per process, so the
//! cache never holds anything a password could be recovered from cheaply).
//!
//! A check that is not remembered goes through the login throttle (`crate::ops::accounts::throttle`): an
//! address or an (account, address) with too many recent failures is refused at once, before
//! any argon2 work, and the checks that go ahead wait for a core in a bounded line. Credentials
//! that were right within the last day are never refused by the throttle (their fingerprint
//! proves the caller knew the password), so a customer sharing an address with an attacker
//! keeps working. Concurrent requests with the same credentials share one check.
//!
//! Authentication tokens (`crate::ops::accounts::token`) take none of this: checking one is a SHA-256 and one
//! indexed lookup, so they are never cached (a revoked token is refused by the next call) and
//! never wait in the argon2 lines. A token that is not right counts as a failed login of the
//! client's address (an address at its limit is answered `TOO_MANY_LOGIN_ATTEMPTS`); a right
//! one is never refused by the throttle, as credentials known to be right are not: it proves
//! the caller holds a secret nobody can guess.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::ops::Caller;
use crate::ops::accounts::throttle::{Line, LoginLimits, LoginThrottle, PasswordChecks};
use crate::ops::accounts::token::{self, Check};
use crate::ops::audit::{self, Origin};
use crate::ops::state::AppState;

/// How long a successful check is trusted without checking again.
const TTL: Duration = Duration::from_secs(60);
/// How long credentials that were right skip the login throttle (they are still checked).
const KNOWN_TTL: Duration = Duration::from_secs(24 * 3600);
const MAX_ENTRIES: usize = 10_000;

type Fingerprint = [u8; 32];

pub struct CredentialCache {
    key: [u8; 32],
    /// Credentials found right, and when.
    entries: Mutex<HashMap<Fingerprint, (Caller, Instant)>>,
    /// The checks running, by credentials: a second request with the same credentials waits
    /// for the first one's answer instead of checking again.
    flights: Arc<Mutex<HashMap<Fingerprint, Arc<tokio::sync::Mutex<()>>>>>,
    throttle: Arc<LoginThrottle>,
    /// Password checks running at once (one per core) and waiting (bounded). Each costs tens
    /// of milliseconds of CPU by design.
    checks: PasswordChecks,
}

impl Default for CredentialCache {
    fn default() -> Self {
        CredentialCache::new(LoginLimits::default())
    }
}

impl CredentialCache {
    pub fn new(limits: LoginLimits) -> Self {
        CredentialCache {
            key: rand::random(),
            entries: Mutex::new(HashMap::new()),
            flights: Arc::default(),
            throttle: Arc::new(LoginThrottle::new(&limits)),
            checks: PasswordChecks::new(&limits),
        }
    }

    /// The argon2 checks' cores and lines.
    pub fn password_checks(&self) -> &PasswordChecks {
        &self.checks
    }

    fn fingerprint(&self, account: &str, password: &str) -> Fingerprint {
        Sha256::new()
            .chain_update(self.key)
            .chain_update(account.as_bytes())
            .chain_update([0u8])
            .chain_update(password.as_bytes())
            .finalize()
            .into()
    }

    /// The caller, if these credentials were found right less than a minute ago.
    fn get(&self, fingerprint: &Fingerprint) -> Option<Caller> {
        let entries = self.entries.lock().unwrap();
        entries
            .get(fingerprint)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(caller, _)| caller.clone())
    }

    /// Whether these credentials were found right within the last day.
    fn known(&self, fingerprint: &Fingerprint) -> bool {
        let entries = self.entries.lock().unwrap();
        entries
            .get(fingerprint)
            .is_some_and(|(_, at)| at.elapsed() < KNOWN_TTL)
    }

    fn put(&self, fingerprint: Fingerprint, caller: Caller) {
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&fingerprint) {
            entries.retain(|_, (_, at)| at.elapsed() < KNOWN_TTL);
            if entries.len() >= MAX_ENTRIES {
                // Forget the older half.
                let mut ages: Vec<Instant> = entries.values().map(|(_, at)| *at).collect();
                let middle = ages.len() / 2;
                let (_, median, _) = ages.select_nth_unstable(middle);
                let median = *median;
                entries.retain(|_, (_, at)| *at > median);
            }
        }
        entries.insert(fingerprint, (caller, Instant::now()));
    }

    /// Waits until no other request is checking these credentials, and holds them until the
    /// returned guard is dropped.
    async fn enter_flight(&self, fingerprint: Fingerprint) -> Flight {
        let lock = self
            .flights
            .lock()
            .unwrap()
            .entry(fingerprint)
            .or_default()
            .clone();
        let guard = lock.lock_owned().await;
        Flight {
            flights: self.flights.clone(),
            fingerprint,
            guard: Some(guard),
        }
    }
}

/// A check of some credentials in flight: while it lives, other requests with the same
/// credentials wait.
struct Flight {
    flights: Arc<Mutex<HashMap<Fingerprint, Arc<tokio::sync::Mutex<()>>>>>,
    fingerprint: Fingerprint,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().unwrap();
        drop(self.guard.take());
        // Every holder and waiter clones the lock under this mutex: when only the map holds
        // it, nobody waits.
        if flights
            .get(&self.fingerprint)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            flights.remove(&self.fingerprint);
        }
    }
}

/// How an e-mail is compared (as `customer::find_login` looks it up).
fn normalize_email(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

/// Who is calling, from an e-mail, a password and the client's address (a successful check
/// is remembered). Refused with `TOO_MANY_LOGIN_ATTEMPTS` when the login throttle says so, or
/// when too many password checks are waiting already: then no password is checked.
pub async fn authenticate(
    state: &AppState,
    email: &str,
    password: &str,
    client: IpAddr,
) -> ApiResult<Caller> {
    let cache = &state.credentials;
    let account = normalize_email(email);
    let fingerprint = cache.fingerprint(&account, password);
    if let Some(caller) = cache.get(&fingerprint) {
        return Ok(caller);
    }
    let flight = cache.enter_flight(fingerprint).await;
    if let Some(caller) = cache.get(&fingerprint) {
        return Ok(caller);
    }
    let attempt = if cache.known(&fingerprint) {
        cache.throttle.admit_known(&account, client)
    } else {
        cache.throttle.admit(&account, client)?
    };
    let permit = cache.checks.acquire(attempt.line()).await?;
    // From here the check runs to its end and is counted, even if the caller goes away: a
    // client cannot have passwords checked without their failures counting by hanging up.
    let state = state.clone();
    let password = password.to_string();
    let line = attempt.line();
    tokio::spawn(async move {
        let _flight = flight;
        let result = match crate::ops::accounts::customer::find_login(&state.db, &account).await {
            Ok(login) => check_password(line, move || login.check(&password)).await,
            Err(err) => Err(err),
        };
        drop(permit);
        match &result {
            Ok(caller) => {
                state.credentials.put(fingerprint, caller.clone());
                attempt.succeeded();
            }
            Err(ApiError::Unauthenticated) => attempt.failed(),
            // A database failure says nothing about the password.
            Err(_) => drop(attempt),
        }
        result
    })
    .await?
}

/// Runs an argon2 check off the async runtime: a quiet caller's on the blocking pool, a
/// suspect's on a thread of its own at a lower CPU priority (nice 10), so that when the
/// machine is busy a customer's check still gets the CPU before the flood's.
async fn check_password(
    line: Line,
    check: impl FnOnce() -> ApiResult<Caller> + Send + 'static,
) -> ApiResult<Caller> {
    match line {
        Line::Quiet => tokio::task::spawn_blocking(check).await?,
        Line::Suspect => {
            let (done, result) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name("password-check".into())
                .spawn(move || {
                    // SAFETY: setpriority(2) on this thread's own id; Linux nice values are
                    // per thread, and the thread ends with the check.
                    unsafe {
                        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
                    }
                    let _ = done.send(check());
                })
                .map_err(ApiError::internal)?;
            result.await.map_err(ApiError::internal)?
        }
    }
}

/// Who is calling, from an authentication token (the Basic user name or a Bearer token) and
/// where the call comes from. An unknown, expired or revoked token is `UNAUTHENTICATED`, as a
/// wrong password is, counts as a failure of the client's address, and is queued as a failed
/// login for the audit trail; from an address at its limit it is `TOO_MANY_LOGIN_ATTEMPTS`.
pub async fn authenticate_token(
    state: &AppState,
    token: &str,
    origin: Origin,
) -> ApiResult<Caller> {
    match token::check(&state.db, token, state.config.max_token_lifetime).await? {
        Check::Valid(caller) => Ok(caller),
        Check::Refused {
            customer_id,
            token_id,
        } => {
            let client = origin
                .address
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            state.credentials.throttle.admit_address(client)?.failed();
            audit::failed_token_login(state, customer_id.zip(token_id), origin);
            Err(ApiError::Unauthenticated)
        }
    }
}
