//! The per-customer bound on API calls in flight on this node (`--max-calls-in-flight`).
//!
//! Every call holds database connections while it runs, from a pool every customer shares
//! (16 on PostgreSQL, 8 on SQLite). Without a bound, one customer sending calls as fast as it
//! can (or calls that each hold a connection long: big lists, a slow write) holds the pool, and
//! every other customer's calls wait for a connection. So each customer may have at most
//! `--max-calls-in-flight` calls running at once on a node; one more waits up to [`WAIT`] for
//! one of them to end, and is then refused with TOO_MANY_REQUESTS (HTTP 429 and `Retry-After`;
//! a SOAP fault with that `errorCode`), having done nothing.
//!
//! The bound is taken in the operation table's entry point (`ops::registry`), after
//! authentication (it is per customer) and before the call decodes its arguments, so SOAP,
//! JSON and the panel share it; it counts every call, reads and writes alike, until it returns
//! (a WaitForJob holds its place while it waits). The job system's heartbeats and lease renewals
//! never wait behind customers' calls: they have a pool of their own (`crate::db::Db::lease_pool`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::Ctx;
use crate::error::{ApiError, ApiResult};

/// How long a call over the bound waits for a place before it is refused: long enough to
/// smooth a burst of quick calls, short enough that a client finds out at once.
pub const WAIT: Duration = Duration::from_secs(1);

/// The calls each customer has in flight on this node.
pub struct CallsInFlight {
    /// The most one customer may have; 0: no bound.
    max: usize,
    /// Customers with calls in flight, and how many (customers with none are not kept).
    held: Mutex<HashMap<i64, usize>>,
    /// Notified whenever a call ends, for the calls waiting for a place.
    freed: Notify,
}

/// A place taken by a call; it is given back when dropped (the call has returned).
pub struct Place {
    calls: Arc<CallsInFlight>,
    customer_id: i64,
}

impl CallsInFlight {
    pub fn new(max: usize) -> Arc<CallsInFlight> {
        Arc::new(CallsInFlight {
            max,
            held: Mutex::new(HashMap::new()),
            freed: Notify::new(),
        })
    }

    /// Takes a place for a call of `customer_id`, waiting up to `wait` for one; `None` when
    /// there is no bound.
    pub async fn enter(
        self: &Arc<Self>,
        customer_id: i64,
        wait: Duration,
    ) -> ApiResult<Option<Place>> {
        if self.max == 0 {
            return Ok(None);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so that a call ending between the look and the wait
            // still wakes this one.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.try_take(customer_id) {
                crate::metrics::METRICS.api_calls_in_flight.inc();
                return Ok(Some(Place {
                    calls: self.clone(),
                    customer_id,
                }));
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(ApiError::TooManyCalls {
                    limit: self.max,
                    retry_after: 1,
                });
            }
        }
    }

    fn try_take(&self, customer_id: i64) -> bool {
        let mut held = self.held.lock().unwrap();
        let count = held.entry(customer_id).or_insert(0);
        if *count < self.max {
            *count += 1;
            true
        } else {
            false
        }
    }

    /// How many calls the customer has in flight.
    pub fn held_by(&self, customer_id: i64) -> usize {
        self.held
            .lock()
            .unwrap()
            .get(&customer_id)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        {
            let mut held = self.calls.held.lock().unwrap();
            if let Some(count) = held.get_mut(&self.customer_id) {
                *count -= 1;
                if *count == 0 {
                    held.remove(&self.customer_id);
                }
            }
        }
        crate::metrics::METRICS.api_calls_in_flight.dec();
        self.calls.freed.notify_waiters();
    }
}

/// Takes a place for the caller's call (see the module's documentation).
pub async fn enter(ctx: &Ctx) -> ApiResult<Option<Place>> {
    ctx.state
        .calls_in_flight
        .enter(ctx.customer_id(), WAIT)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_customer_over_the_bound_waits_then_is_refused_others_are_not() {
        let calls = CallsInFlight::new(2);
        let first = calls.enter(1, Duration::ZERO).await.unwrap();
        let second = calls.enter(1, Duration::ZERO).await.unwrap();
        assert_eq!(calls.held_by(1), 2);
        let refused = calls.enter(1, Duration::from_millis(50)).await;
        assert!(matches!(
            refused,
            Err(ApiError::TooManyCalls {
                limit: 2,
                retry_after: 1
            })
        ));
        // Another customer is not held up.
        let other = calls.enter(2, Duration::ZERO).await.unwrap();
        assert!(other.is_some());
        // A call that waits gets the place a call gives back (whenever it is given back
        // within its wait).
        let waiting = {
            let calls = calls.clone();
            tokio::spawn(async move { calls.enter(1, Duration::from_secs(60)).await })
        };
        drop(first);
        let place = waiting.await.unwrap().unwrap();
        assert!(place.is_some());
        assert_eq!(calls.held_by(1), 2);
        drop((second, place, other));
        assert_eq!(calls.held_by(1), 0);
        assert!(calls.held.lock().unwrap().is_empty(), "nothing kept");
    }

    #[tokio::test]
    async fn no_bound_takes_no_place() {
        let calls = CallsInFlight::new(0);
        for _ in 0..100 {
            assert!(calls.enter(1, Duration::ZERO).await.unwrap().is_none());
        }
    }
}
