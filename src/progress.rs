//! Progress and cancellation of long work (a job), shared between the code doing the work
//! (often on a blocking thread) and whoever watches it (the job's heartbeat, which writes it
//! to the database twice a second). Updating it is a few atomic stores, cheap enough to do for
//! every buffer. It sits in the bottom layer so that the fetch pipeline and storage copies can
//! report into it without knowing about jobs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

const UNKNOWN: u64 = u64::MAX;

#[derive(Debug)]
pub struct Progress {
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
    phase: Mutex<&'static str>,
    cancel: CancellationToken,
}

/// What the heartbeat writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressSnapshot {
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    pub percent: i64,
    pub phase: &'static str,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            bytes_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(UNKNOWN),
            phase: Mutex::new("queued"),
            cancel: CancellationToken::new(),
        }
    }
}

impl Progress {
    pub fn set_phase(&self, phase: &'static str) {
        *self.phase.lock().unwrap() = phase;
    }

    pub fn set_total(&self, total: Option<u64>) {
        self.bytes_total
            .store(total.unwrap_or(UNKNOWN), Ordering::Relaxed);
    }

    pub fn set_done(&self, done: u64) {
        self.bytes_done.store(done, Ordering::Relaxed);
    }

    pub fn add_done(&self, n: u64) {
        self.bytes_done.fetch_add(n, Ordering::Relaxed);
    }

    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// A token that fires when the job is cancelled, for `select!`-ing async work against.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        let done = self.bytes_done.load(Ordering::Relaxed);
        let total = match self.bytes_total.load(Ordering::Relaxed) {
            UNKNOWN => None,
            t => Some(t),
        };
        // 100% is for finished jobs only; a running one tops out at 99.
        let percent = match total {
            Some(t) if t > 0 => ((done.min(t) as u128 * 100) / t as u128).min(99) as i64,
            _ => 0,
        };
        ProgressSnapshot {
            bytes_done: done,
            bytes_total: total,
            percent,
            phase: *self.phase.lock().unwrap(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_follows_bytes_and_stays_below_100_while_running() {
        let p = Progress::default();
        assert_eq!(p.snapshot().percent, 0);
        p.set_total(Some(200));
        p.add_done(50);
        assert_eq!(p.snapshot().percent, 25);
        p.set_done(200);
        assert_eq!(p.snapshot().percent, 99);
        p.set_total(None);
        assert_eq!(p.snapshot().bytes_total, None);
    }
}
