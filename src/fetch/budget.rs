//! A fetch's budgets, so that no source holds a worker for as long as it likes: a total
//! deadline, a minimum average throughput once a grace period has passed, a number of retries
//! in all, and a bound on input that decodes to nothing (checked by the decoder, see
//! [`super::decode`]). Running out of one fails the fetch with `FETCH_TIMEOUT`
//! ([`FetchError::FetchTimeout`]), naming the budget.
//!
//! Time is the wall clock of the fetch (one attempt of the job), from its start: connecting,
//! waiting between retries and downloading all count.

use std::future::pending;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use super::pipeline::Wire;
use crate::fetch::error::FetchError;

/// Retries after transient failures that made no progress, in a row (a source that is down).
pub const MAX_RETRIES_PER_STALL: u32 = 3;

/// How often the throughput is checked once the grace period is over.
const THROUGHPUT_CHECK: Duration = Duration::from_secs(1);

/// The budgets, as the server's flags set them (`--fetch-*`, with their defaults in
/// `crate::config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// The whole fetch must be downloaded within this; `None`: no deadline.
    pub deadline: Option<Duration>,
    /// Bytes per second the source must send on average since the start, checked from
    /// `grace` on; 0: no minimum.
    pub min_throughput: u64,
    pub grace: Duration,
    /// Retries after transient failures, in all, whether they made progress or not.
    pub max_retries: u32,
    /// Bytes of input the decoder may read without producing a byte of image; 0: no bound.
    pub max_padding: u64,
}

/// The clock of one fetch.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    limits: FetchLimits,
    started: Instant,
}

impl Budget {
    /// Starts the clock.
    pub fn start(limits: FetchLimits) -> Budget {
        Budget {
            limits,
            started: Instant::now(),
        }
    }

    pub fn limits(&self) -> &FetchLimits {
        &self.limits
    }

    /// Resolves when the deadline passes or the throughput is found too low, with the budget
    /// that ran out; never while the fetch is within them. Race it against the download.
    pub async fn watch(&self, wire: &Wire) -> FetchBudget {
        let deadline = async {
            // (A deadline too far away to be an instant is none.)
            match self
                .limits
                .deadline
                .and_then(|d| Some((d, self.started.checked_add(d)?)))
            {
                Some((deadline, at)) => {
                    tokio::time::sleep_until(at).await;
                    FetchBudget::Deadline {
                        seconds: deadline.as_secs(),
                    }
                }
                None => pending().await,
            }
        };
        let throughput = async {
            // The first check after the grace period, and not before a second has passed (an
            // average over no time says nothing).
            let first = self
                .started
                .checked_add(self.limits.grace.max(THROUGHPUT_CHECK));
            let Some(first) = first.filter(|_| self.limits.min_throughput > 0) else {
                return pending().await;
            };
            let mut ticks = tokio::time::interval_at(first, THROUGHPUT_CHECK);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let elapsed = Instant::now() - self.started;
                if let Some(spent) = self.throughput_spent(elapsed, wire.total_received()) {
                    return spent;
                }
            }
        };
        tokio::select! {
            spent = deadline => spent,
            spent = throughput => spent,
        }
    }

    /// Whether `received` bytes in `elapsed` are below the minimum (only from the grace period
    /// on).
    fn throughput_spent(&self, elapsed: Duration, received: u64) -> Option<FetchBudget> {
        let minimum = self.limits.min_throughput;
        if minimum == 0 || elapsed < self.limits.grace || elapsed.is_zero() {
            return None;
        }
        let average = (received as f64 / elapsed.as_secs_f64()) as u64;
        (average < minimum).then(|| FetchBudget::Throughput {
            average,
            seconds: elapsed.as_secs_f64().round() as u64,
            minimum,
        })
    }
}

/// The retry rules of one download: at most [`MAX_RETRIES_PER_STALL`] in a row without
/// progress (`FETCH_FAILED`: the source is down), and at most `max_retries` in all
/// (`FETCH_TIMEOUT`: it keeps breaking off).
#[derive(Debug)]
pub(super) struct Retries {
    max_in_all: u32,
    in_all: u32,
    in_a_row: u32,
}

impl Retries {
    pub fn new(limits: &FetchLimits) -> Retries {
        Retries {
            max_in_all: limits.max_retries,
            in_all: 0,
            in_a_row: 0,
        }
    }

    /// After a transient failure (`message`), which made progress or not: how long to pause
    /// before the next try, or the error that ends the fetch.
    pub fn after_failure(
        &mut self,
        progressed: bool,
        message: String,
    ) -> Result<Duration, FetchError> {
        if progressed {
            self.in_a_row = 0;
        }
        self.in_a_row += 1;
        self.in_all = self.in_all.saturating_add(1);
        if self.in_a_row > MAX_RETRIES_PER_STALL {
            return Err(FetchError::FetchFailed(format!(
                "{message} (gave up after {MAX_RETRIES_PER_STALL} retries)"
            )));
        }
        if self.in_all > self.max_in_all {
            return Err(FetchError::from(FetchBudget::Retries {
                retries: self.max_in_all,
                last: message,
            }));
        }
        Ok(Duration::from_millis(500 << self.in_a_row))
    }
}

/// Which of a fetch's budgets ran out ([`FetchError::FetchTimeout`]), with what the message
/// needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchBudget {
    /// The fetch was still downloading when its total deadline (seconds) passed.
    #[error("the fetch took longer than its {} deadline", span(*.seconds))]
    Deadline { seconds: u64 },

    /// After the grace period, the source's average rate since the fetch started (bytes per
    /// second, over `seconds`) was below the minimum.
    #[error(
        "the source sent {}/s on average over {}, below the minimum of {}/s",
        amount(*.average),
        span(*.seconds),
        amount(*.minimum)
    )]
    Throughput {
        average: u64,
        seconds: u64,
        minimum: u64,
    },

    /// The decoder read more than `limit` bytes of the source that decoded to no byte of
    /// image.
    #[error(
        "the source sent more than {} without a byte of image (padding, skippable frames or \
         empty members)",
        amount(*.limit)
    )]
    NoImageBytes { limit: u64 },

    /// Transient failures (broken connections, timeouts, 5xx answers) beyond the number of
    /// retries one fetch may make in all, even though each made progress.
    #[error("the fetch failed after {retries} retries in all (the last: {last})")]
    Retries { retries: u32, last: String },
}

/// `64 KiB`, `1.5 MiB`, `200 MiB`, `999 bytes`: a whole number from 10 units on, else one
/// decimal (dropped when it is 0).
fn amount(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let text = if value >= 10.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    };
    format!("{} {}", text.trim_end_matches(".0"), UNITS[unit])
}

/// `6 h`, `5 min`, `90 s`, `1 h 30 min`.
fn span(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let parts: Vec<String> = [(h, "h"), (m, "min"), (s, "s")]
        .into_iter()
        .filter(|&(n, _)| n > 0)
        .map(|(n, unit)| format!("{n} {unit}"))
        .collect();
    if parts.is_empty() {
        "0 s".into()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> FetchLimits {
        FetchLimits {
            deadline: Some(Duration::from_secs(60)),
            min_throughput: 1000,
            grace: Duration::from_secs(10),
            max_retries: 4,
            max_padding: 1 << 20,
        }
    }

    #[test]
    fn throughput_is_checked_only_after_the_grace_period() {
        let budget = Budget::start(limits());
        let s = Duration::from_secs;
        assert_eq!(
            budget.throughput_spent(s(5), 0),
            None,
            "within the grace period"
        );
        assert_eq!(
            budget.throughput_spent(s(10), 10_000),
            None,
            "exactly the minimum"
        );
        assert_eq!(
            budget.throughput_spent(s(10), 9_999),
            Some(FetchBudget::Throughput {
                average: 999,
                seconds: 10,
                minimum: 1000
            })
        );
        // The average is since the start: a fast start carries a slow patch.
        assert_eq!(budget.throughput_spent(s(30), 30_000), None);
        let off = Budget::start(FetchLimits {
            min_throughput: 0,
            ..limits()
        });
        assert_eq!(off.throughput_spent(s(3600), 0), None);
    }

    #[test]
    fn retries_are_bounded_in_a_row_and_in_all() {
        // Failures without progress: the fourth in a row ends it, FETCH_FAILED.
        let mut retries = Retries::new(&limits());
        for pause in [1000, 2000, 4000] {
            let next = retries.after_failure(false, "refused".into()).unwrap();
            assert_eq!(next, Duration::from_millis(pause));
        }
        let err = retries.after_failure(false, "refused".into()).unwrap_err();
        assert_eq!(err.code(), "FETCH_FAILED");
        assert_eq!(err.to_string(), "refused (gave up after 3 retries)");

        // Failures that each made progress: the fifth in all ends it, FETCH_TIMEOUT.
        let mut retries = Retries::new(&limits());
        for _ in 0..4 {
            let next = retries.after_failure(true, "broken".into()).unwrap();
            assert_eq!(
                next,
                Duration::from_millis(1000),
                "progress resets the pause"
            );
        }
        let err = retries.after_failure(true, "broken".into()).unwrap_err();
        assert_eq!(err.code(), "FETCH_TIMEOUT");
        assert_eq!(
            err.to_string(),
            "the fetch failed after 4 retries in all (the last: broken)"
        );

        // No retries at all.
        let mut retries = Retries::new(&FetchLimits {
            max_retries: 0,
            ..limits()
        });
        assert_eq!(
            retries.after_failure(true, "x".into()).unwrap_err().code(),
            "FETCH_TIMEOUT"
        );
    }

    #[tokio::test]
    async fn the_watch_names_the_budget_that_ran_out() {
        let wire = Wire::detached();
        let within = |budget: Budget| async move {
            let wire = Wire::detached();
            wire.received(10_000);
            tokio::time::timeout(Duration::from_secs(30), budget.watch(&wire))
                .await
                .expect("the watch never resolved")
        };
        let deadline = Budget::start(FetchLimits {
            deadline: Some(Duration::from_secs(1)),
            min_throughput: 0,
            ..limits()
        });
        assert_eq!(within(deadline).await, FetchBudget::Deadline { seconds: 1 });
        // A grace period of 0: the first check is a second in, and 10,000 bytes in a second or
        // more are below 1 MB/s.
        let slow = Budget::start(FetchLimits {
            deadline: None,
            min_throughput: 1_000_000,
            grace: Duration::ZERO,
            ..limits()
        });
        assert!(
            matches!(
                within(slow).await,
                FetchBudget::Throughput { average, minimum: 1_000_000, .. } if average <= 10_000
            ),
            "not a throughput"
        );
        // No deadline (or one too far to reach) and no minimum: the watch never resolves.
        for deadline in [None, Some(Duration::from_secs(u64::MAX))] {
            let unbounded = Budget::start(FetchLimits {
                deadline,
                min_throughput: 0,
                ..limits()
            });
            let watched =
                tokio::time::timeout(Duration::from_millis(100), unbounded.watch(&wire)).await;
            assert!(watched.is_err(), "{deadline:?}: {watched:?}");
        }
    }

    #[test]
    fn budget_messages_say_which_budget_ran_out() {
        let timeout = |budget: FetchBudget| FetchError::from(budget).public_message();
        assert_eq!(
            timeout(FetchBudget::Deadline { seconds: 6 * 3600 }),
            "the fetch took longer than its 6 h deadline"
        );
        assert_eq!(
            timeout(FetchBudget::Throughput {
                average: 12 << 10,
                seconds: 300,
                minimum: 64 << 10,
            }),
            "the source sent 12 KiB/s on average over 5 min, below the minimum of 64 KiB/s"
        );
        assert_eq!(
            timeout(FetchBudget::NoImageBytes { limit: 64 << 20 }),
            "the source sent more than 64 MiB without a byte of image (padding, skippable \
             frames or empty members)"
        );
        assert_eq!(
            timeout(FetchBudget::Retries {
                retries: 10,
                last: "the connection closed".into(),
            }),
            "the fetch failed after 10 retries in all (the last: the connection closed)"
        );
        assert_eq!(
            FetchError::from(FetchBudget::Deadline { seconds: 3 }).code(),
            "FETCH_TIMEOUT"
        );
    }

    #[test]
    fn amounts_and_spans_read_well() {
        assert_eq!(amount(999), "999 bytes");
        assert_eq!(amount(1024), "1 KiB");
        assert_eq!(amount(1536), "1.5 KiB");
        assert_eq!(amount(1_000_000), "977 KiB");
        assert_eq!(amount(200 << 20), "200 MiB");
        assert_eq!(amount(3 << 29), "1.5 GiB");
        assert_eq!(span(0), "0 s");
        assert_eq!(span(3), "3 s");
        assert_eq!(span(90), "1 min 30 s");
        assert_eq!(span(300), "5 min");
        assert_eq!(span(21600), "6 h");
        assert_eq!(span(5400), "1 h 30 min");
    }
}
