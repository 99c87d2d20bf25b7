//! Login throttling: what stands between a flood of wrong passwords and the argon2 checks.
//!
//! Two things, both in memory and per node (nodes are separate processes; each counts what it
//! sees):
//!
//! - [`LoginThrottle`] counts failed password checks per client address and per (account,
//!   client address), in leaky buckets: each failure adds one, and the level drains at `limit`
//!   per window, so a key may fail `limit` times in a burst and then once every
//!   `window / limit`. A key whose level (failures, plus its checks still running) has reached
//!   its limit is refused at once, with the seconds until it may try again, and no password is
//!   checked. Past failures therefore cost an attacker nothing but time, and cost the server
//!   nothing at all.
//!
//!   There is deliberately no limit per account alone: a lock on an account that also refused
//!   the right password from everywhere would let anyone lock any customer out by sending
//!   wrong passwords under their e-mail. Guessing one account from many addresses is bounded
//!   by the limit per (account, address) on each of them, by the limit per address, and by the
//!   argon2 capacity below; the owner, from their own address, is never refused because of
//!   what other addresses sent. (Credentials that were right within the last day skip the
//!   limits altogether, see `credentials`.) An authentication token that is not right (unknown,
//!   expired or revoked) counts as a failure of its address only: it names no account.
//!
//! - [`PasswordChecks`] runs at most one argon2 check per core, and lets a bounded number wait
//!   in two lines: callers whose address has no recent failure and no other check running
//!   (a customer logging in), and the others (a flood). The flood's line may use all cores but
//!   one (on a single core, it shares it), and its checks run at a lower CPU priority, so a
//!   customer's first login waits at most for the checks already running, not for a queue of
//!   wrong passwords; a full line is refused at once rather than queued without end.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// The limits of [`LoginThrottle`] and [`PasswordChecks`] (from `serve`'s flags).
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Failures a client address may make in a window; 0: no limit.
    pub failures_per_address: u32,
    /// Failures for one account from one client address in a window; 0: no limit.
    pub failures_per_account: u32,
    /// The window, in seconds.
    pub window_seconds: u64,
    /// Password checks that may wait for a core in each line.
    pub queue: usize,
    /// Password checks running at once (one per core).
    pub concurrent_checks: usize,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            failures_per_address: 50,
            failures_per_account: 10,
            window_seconds: 300,
            queue: 64,
            concurrent_checks: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// Keys kept per table at most. Beyond, the quietest half is forgotten (see [`Table::make_room`]).
const MAX_KEYS: usize = 100_000;

/// One key's leaky bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Failures, drained at the table's rate since `at`.
    failures: f64,
    /// Checks admitted and not finished.
    running: u32,
    at: Instant,
}

impl Bucket {
    fn drain(&mut self, now: Instant, rate: f64) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.failures = (self.failures - elapsed * rate).max(0.0);
        self.at = now;
    }
}

/// The buckets of one kind of key.
struct Table<K> {
    buckets: HashMap<K, Bucket>,
    limit: u32,
    /// Failures drained per second: `limit / window`.
    rate: f64,
}

impl<K: Hash + Eq + Copy> Table<K> {
    fn new(limit: u32, window_seconds: u64) -> Self {
        Table {
            buckets: HashMap::new(),
            limit,
            rate: f64::from(limit.max(1)) / window_seconds.max(1) as f64,
        }
    }

    /// The key's bucket, drained to `now`.
    fn bucket(&mut self, key: K, now: Instant) -> &mut Bucket {
        if !self.buckets.contains_key(&key) && self.buckets.len() >= MAX_KEYS {
            self.make_room(now);
        }
        let rate = self.rate;
        let bucket = self.buckets.entry(key).or_insert(Bucket {
            failures: 0.0,
            running: 0,
            at: now,
        });
        bucket.drain(now, rate);
        bucket
    }

    /// Seconds until `bucket` may try again, or `None` if it may now.
    fn refusal(&self, bucket: &Bucket) -> Option<u64> {
        if self.limit == 0 {
            return None;
        }
        // Refused when one more failure would not fit.
        let room = f64::from(self.limit) - 1.0;
        if bucket.failures + f64::from(bucket.running) <= room {
            return None;
        }
        // Until it fits; if only running checks fill the bucket, they end soon.
        let excess = bucket.failures - room;
        Some(if excess > 0.0 {
            (excess / self.rate).ceil().max(1.0) as u64
        } else {
            1
        })
    }

    /// Ends a running check of `key`. Returns whether this failure brought the key to its
    /// limit (for the log: once per crossing, not once per refusal).
    fn finish(&mut self, key: K, now: Instant, failed: bool) -> bool {
        let room = f64::from(self.limit) - 1.0;
        let limited = self.limit > 0;
        let rate = self.rate;
        let bucket = match self.buckets.get_mut(&key) {
            Some(bucket) => {
                bucket.drain(now, rate);
                bucket.running = bucket.running.saturating_sub(1);
                bucket
            }
            None if failed => self.bucket(key, now),
            None => return false,
        };
        if !failed {
            return false;
        }
        let before = bucket.failures;
        bucket.failures += 1.0;
        limited && before <= room && bucket.failures > room
    }

    /// Forgets the buckets that drained empty; if that is not enough, the quietest half. An
    /// attacker who fills the table with fresh addresses can make it forget keys that were
    /// near their limit, but only by failing from as many addresses as the table holds.
    fn make_room(&mut self, now: Instant) {
        let rate = self.rate;
        self.buckets.retain(|_, b| {
            b.drain(now, rate);
            b.failures > 0.0 || b.running > 0
        });
        if self.buckets.len() >= MAX_KEYS / 2 {
            let mut levels: Vec<f64> = self.buckets.values().map(|b| b.failures).collect();
            let middle = levels.len() / 2;
            let (_, median, _) = levels.select_nth_unstable_by(middle, f64::total_cmp);
            let median = *median;
            self.buckets
                .retain(|_, b| b.failures > median || b.running > 0);
        }
    }
}

/// A client address as counted: IPv4 addresses one by one, IPv6 by /64 (what one subscriber
/// usually gets), IPv4-mapped IPv6 as IPv4.
fn address_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        v4 => v4,
    }
}

type PairKey = [u8; 16];

struct Tables {
    addresses: Table<IpAddr>,
    pairs: Table<PairKey>,
}

/// Failed logins per client address and per (account, client address).
pub struct LoginThrottle {
    /// Keys the (account, address) table by a keyed hash, so that it holds no e-mails.
    key: [u8; 32],
    tables: Mutex<Tables>,
}

impl LoginThrottle {
    pub fn new(limits: &LoginLimits) -> Self {
        LoginThrottle {
            key: rand::random(),
            tables: Mutex::new(Tables {
                addresses: Table::new(limits.failures_per_address, limits.window_seconds),
                pairs: Table::new(limits.failures_per_account, limits.window_seconds),
            }),
        }
    }

    fn pair_key(&self, account: &str, address: IpAddr) -> PairKey {
        let address = match address {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let digest = Sha256::new()
            .chain_update(self.key)
            .chain_update(address)
            .chain_update(account.as_bytes())
            .finalize();
        digest[..16].try_into().unwrap()
    }

    /// Lets a password check for `account` (normalized) from `client` go ahead, or refuses it
    /// with `TOO_MANY_LOGIN_ATTEMPTS` when the address or the (account, address) is at its
    /// limit. The check counts as running until the returned [`Attempt`] is finished.
    pub fn admit(self: &Arc<Self>, account: &str, client: IpAddr) -> Result<Attempt, ApiError> {
        self.enter(Some(account), client, true)
    }

    /// Like [`Self::admit`], but never refuses: for credentials known to have been right.
    pub fn admit_known(self: &Arc<Self>, account: &str, client: IpAddr) -> Attempt {
        self.enter(Some(account), client, false)
            .expect("admitting without limits cannot fail")
    }

    /// Counts a login that names no account (an authentication token that was not right, see
    /// `crate::ops::accounts::token`) against `client`'s address, or refuses it with
    /// `TOO_MANY_LOGIN_ATTEMPTS` when that address is at its limit. Its failure counts for
    /// the address only.
    pub fn admit_address(self: &Arc<Self>, client: IpAddr) -> Result<Attempt, ApiError> {
        self.enter(None, client, true)
    }

    fn enter(
        self: &Arc<Self>,
        account: Option<&str>,
        client: IpAddr,
        limited: bool,
    ) -> Result<Attempt, ApiError> {
        let address = address_key(client);
        let pair = account.map(|account| self.pair_key(account, address));
        let now = Instant::now();
        let mut tables = self.tables.lock().unwrap();
        let Tables { addresses, pairs } = &mut *tables;
        let by_address = *addresses.bucket(address, now);
        let by_pair = pair.map(|pair| *pairs.bucket(pair, now));
        if limited {
            if let Some(seconds) = addresses.refusal(&by_address) {
                return Err(ApiError::TooManyLoginAttempts {
                    reason: "too many failed logins from this address",
                    retry_after: seconds,
                });
            }
            if let Some(seconds) = by_pair.and_then(|by_pair| pairs.refusal(&by_pair)) {
                return Err(ApiError::TooManyLoginAttempts {
                    reason: "too many failed logins for this account from this address",
                    retry_after: seconds,
                });
            }
        }
        let quiet = by_address.failures == 0.0
            && by_address.running == 0
            && by_pair.is_none_or(|by_pair| by_pair.failures == 0.0);
        addresses.bucket(address, now).running += 1;
        if let Some(pair) = pair {
            pairs.bucket(pair, now).running += 1;
        }
        Ok(Attempt {
            throttle: self.clone(),
            account: account.unwrap_or_default().to_string(),
            address,
            pair,
            line: if quiet || !limited {
                Line::Quiet
            } else {
                Line::Suspect
            },
            finished: false,
        })
    }

    /// Failures counted for `client` now.
    pub fn failures_from(&self, client: IpAddr) -> f64 {
        let mut tables = self.tables.lock().unwrap();
        tables
            .addresses
            .bucket(address_key(client), Instant::now())
            .failures
    }
}

/// An admitted password check, counted as running until it is finished. Dropped unfinished
/// (the caller went away before the check started), it counts as nothing.
pub struct Attempt {
    throttle: Arc<LoginThrottle>,
    /// The account (normalized e-mail, for the log; empty for a token).
    account: String,
    address: IpAddr,
    /// None for a login that names no account.
    pair: Option<PairKey>,
    line: Line,
    finished: bool,
}

impl Attempt {
    /// The line its password check waits in.
    pub fn line(&self) -> Line {
        self.line
    }

    /// The password was right: the (account, address) starts afresh. The address keeps its
    /// failures (one right password of its own must not wipe out an attacker's record).
    pub fn succeeded(mut self) {
        self.finish(Outcome::Succeeded);
    }

    /// The password was wrong (or the account unknown): one more failure for both keys.
    pub fn failed(mut self) {
        self.finish(Outcome::Failed);
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.finished {
            return;
        }
        self.finished = true;
        let now = Instant::now();
        let failed = outcome == Outcome::Failed;
        let mut tables = self.throttle.tables.lock().unwrap();
        let address_limited = tables.addresses.finish(self.address, now, failed);
        let pair_limited = self
            .pair
            .is_some_and(|pair| tables.pairs.finish(pair, now, failed));
        if outcome == Outcome::Succeeded
            && let Some(pair) = self.pair
            && let Some(bucket) = tables.pairs.buckets.get_mut(&pair)
        {
            bucket.failures = 0.0;
        }
        drop(tables);
        if address_limited {
            tracing::warn!(
                address = %self.address,
                "failed logins from this address reached the limit: its logins are refused \
                 until some are forgotten"
            );
        }
        if pair_limited {
            tracing::warn!(
                address = %self.address,
                account = %self.account,
                "failed logins for this account from this address reached the limit: they are \
                 refused until some are forgotten"
            );
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.finish(Outcome::Abandoned);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed,
    Abandoned,
}

/// The line a password check waits in for a core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// The address has no recent failure and no other check running, or the credentials were
    /// right before.
    Quiet,
    /// Everything else.
    Suspect,
}

/// The argon2 checks: at most one per core at once, the rest waiting in two bounded lines.
pub struct PasswordChecks {
    cores: Arc<Semaphore>,
    /// Held by suspect checks while they wait and run: they never take the last core.
    suspect_cores: Arc<Semaphore>,
    waiting: [AtomicUsize; 2],
    max_waiting: usize,
}

/// Leave to run one password check. The suspect line's permit is kept with the core's.
pub struct CheckPermit {
    _core: OwnedSemaphorePermit,
    _suspect: Option<OwnedSemaphorePermit>,
}

impl PasswordChecks {
    pub fn new(limits: &LoginLimits) -> Self {
        let cores = limits.concurrent_checks.max(1);
        PasswordChecks {
            cores: Arc::new(Semaphore::new(cores)),
            suspect_cores: Arc::new(Semaphore::new((cores - 1).max(1))),
            waiting: [AtomicUsize::new(0), AtomicUsize::new(0)],
            max_waiting: limits.queue,
        }
    }

    /// Waits for a core in `line`, or refuses at once when that line is full.
    pub async fn acquire(&self, line: Line) -> Result<CheckPermit, ApiError> {
        if let Some(permit) = self.try_acquire(line) {
            return Ok(permit);
        }
        let waiting = &self.waiting[line as usize];
        let _waiting =
            Waiting::enter(waiting, self.max_waiting).ok_or(ApiError::TooManyLoginAttempts {
                reason: "too many password checks are waiting",
                retry_after: 1,
            })?;
        let suspect = match line {
            Line::Quiet => None,
            Line::Suspect => Some(
                self.suspect_cores
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(ApiError::internal)?,
            ),
        };
        let core = self
            .cores
            .clone()
            .acquire_owned()
            .await
            .map_err(ApiError::internal)?;
        Ok(CheckPermit {
            _core: core,
            _suspect: suspect,
        })
    }

    fn try_acquire(&self, line: Line) -> Option<CheckPermit> {
        let suspect = match line {
            Line::Quiet => None,
            Line::Suspect => Some(self.suspect_cores.clone().try_acquire_owned().ok()?),
        };
        let core = self.cores.clone().try_acquire_owned().ok()?;
        Some(CheckPermit {
            _core: core,
            _suspect: suspect,
        })
    }
}

/// One check counted as waiting in a line while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize, max: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Waiting(count))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn limits(per_address: u32, per_account: u32) -> LoginLimits {
        LoginLimits {
            failures_per_address: per_address,
            failures_per_account: per_account,
            window_seconds: 300,
            queue: 2,
            concurrent_checks: 2,
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn code(result: Result<Attempt, ApiError>) -> Option<(&'static str, u64)> {
        match result {
            Ok(_) => None,
            Err(err @ ApiError::TooManyLoginAttempts { retry_after, .. }) => {
                Some((err.code(), retry_after))
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn an_account_is_refused_from_one_address_only() {
        let throttle = Arc::new(LoginThrottle::new(&limits(100, 3)));
        for _ in 0..3 {
            throttle.admit("alice@x", ip("10.0.0.1")).unwrap().failed();
        }
        let (code, retry_after) = code(throttle.admit("alice@x", ip("10.0.0.1"))).unwrap();
        assert_eq!(code, "TOO_MANY_LOGIN_ATTEMPTS");
        // 3 per 300 s: one more failure fits after 100 s.
        assert!((99..=100).contains(&retry_after), "{retry_after}");
        // The account from elsewhere, and another account from there, still go ahead.
        assert!(throttle.admit("alice@x", ip("10.0.0.2")).is_ok());
        assert!(throttle.admit("bob@x", ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn an_address_is_refused_for_every_account() {
        let throttle = Arc::new(LoginThrottle::new(&limits(4, 100)));
        for n in 0..4 {
            throttle
                .admit(&format!("user{n}@x"), ip("10.0.0.1"))
                .unwrap()
                .failed();
        }
        assert!(code(throttle.admit("new@x", ip("10.0.0.1"))).is_some());
        assert!(throttle.admit("new@x", ip("10.0.0.2")).is_ok());
        // An IPv6 subscriber's /64 is one address.
        for n in 0..4 {
            throttle
                .admit(&format!("user{n}@x"), ip(&format!("2001:db8::{n}")))
                .unwrap()
                .failed();
        }
        assert!(code(throttle.admit("new@x", ip("2001:db8::ffff"))).is_some());
        assert!(throttle.admit("new@x", ip("2001:db8:0:1::1")).is_ok());
    }

    #[test]
    fn running_checks_count_against_the_limit_and_abandoned_ones_do_not() {
        let throttle = Arc::new(LoginThrottle::new(&limits(2, 100)));
        let first = throttle.admit("a@x", ip("10.0.0.1")).unwrap();
        assert_eq!(first.line(), Line::Quiet);
        let second = throttle.admit("b@x", ip("10.0.0.1")).unwrap();
        assert_eq!(
            second.line(),
            Line::Suspect,
            "another check of the address runs"
        );
        assert_eq!(
            code(throttle.admit("c@x", ip("10.0.0.1"))),
            Some(("TOO_MANY_LOGIN_ATTEMPTS", 1))
        );
        drop(first);
        second.succeeded();
        assert_eq!(throttle.failures_from(ip("10.0.0.1")), 0.0);
        assert_eq!(
            throttle.admit("c@x", ip("10.0.0.1")).unwrap().line(),
            Line::Quiet
        );
    }

    #[test]
    fn success_resets_the_account_and_address_but_not_the_address() {
        let throttle = Arc::new(LoginThrottle::new(&limits(100, 2)));
        throttle.admit("a@x", ip("10.0.0.1")).unwrap().failed();
        throttle.admit("a@x", ip("10.0.0.1")).unwrap().succeeded();
        throttle.admit("a@x", ip("10.0.0.1")).unwrap().failed();
        assert!(throttle.admit("a@x", ip("10.0.0.1")).is_ok());
        assert!(throttle.failures_from(ip("10.0.0.1")) > 1.9);
    }

    #[test]
    fn known_credentials_are_never_refused() {
        let throttle = Arc::new(LoginThrottle::new(&limits(1, 1)));
        throttle.admit("a@x", ip("10.0.0.1")).unwrap().failed();
        assert!(throttle.admit("a@x", ip("10.0.0.1")).is_err());
        let attempt = throttle.admit_known("a@x", ip("10.0.0.1"));
        assert_eq!(attempt.line(), Line::Quiet);
    }

    #[test]
    fn logins_without_an_account_count_for_the_address_only() {
        let throttle = Arc::new(LoginThrottle::new(&limits(3, 1)));
        for _ in 0..2 {
            throttle.admit_address(ip("10.0.0.1")).unwrap().failed();
        }
        // The limit per (account, address) is 1: no account was charged.
        assert!(throttle.admit("a@x", ip("10.0.0.1")).is_ok());
        throttle.admit_address(ip("10.0.0.1")).unwrap().failed();
        assert!(throttle.failures_from(ip("10.0.0.1")) > 2.9);
        assert!(code(throttle.admit_address(ip("10.0.0.1"))).is_some());
        assert!(code(throttle.admit("a@x", ip("10.0.0.1"))).is_some());
        assert!(throttle.admit_address(ip("10.0.0.2")).is_ok());
    }

    #[test]
    fn no_limit_when_zero() {
        let throttle = Arc::new(LoginThrottle::new(&limits(0, 0)));
        for _ in 0..100 {
            throttle.admit("a@x", ip("10.0.0.1")).unwrap().failed();
        }
        assert!(throttle.admit("a@x", ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut table: Table<u32> = Table::new(10, 300);
        let now = Instant::now();
        for key in 0..(MAX_KEYS as u32 + 10) {
            table.bucket(key, now).failures = f64::from(key % 7);
        }
        assert!(table.buckets.len() <= MAX_KEYS);
        // The busiest keys are kept.
        assert!(table.buckets.values().any(|b| b.failures == 6.0));
    }

    #[test]
    fn reaching_the_limit_is_reported_once() {
        let mut table: Table<u32> = Table::new(2, 300);
        let now = Instant::now();
        table.bucket(1, now).running = 3;
        assert!(!table.finish(1, now, true));
        assert!(table.finish(1, now, true));
        assert!(!table.finish(1, now, true));
        assert!(
            !table.finish(2, now, false),
            "an unknown key that did not fail"
        );
    }

    #[test]
    fn suspects_leave_a_core_to_quiet_callers_and_full_lines_refuse() {
        let checks = PasswordChecks::new(&limits(0, 0));
        let running = checks
            .acquire(Line::Suspect)
            .now_or_never()
            .unwrap()
            .unwrap();
        // The second core is not for suspects: they wait (two may), the third is refused.
        let mut waiting = vec![
            Box::pin(checks.acquire(Line::Suspect)),
            Box::pin(checks.acquire(Line::Suspect)),
        ];
        for w in &mut waiting {
            assert!(w.as_mut().now_or_never().is_none());
        }
        let refused = checks.acquire(Line::Suspect).now_or_never().unwrap();
        assert!(matches!(
            refused,
            Err(ApiError::TooManyLoginAttempts { .. })
        ));
        // A quiet caller gets the free core at once.
        let quiet = checks.acquire(Line::Quiet).now_or_never().unwrap().unwrap();
        drop((running, quiet));
    }
}
