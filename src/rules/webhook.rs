//! Webhook delivery of a rule's alerts: each rule with a `webhook` has an
//! [`Outbox`], a bounded queue of alert bodies and one background task
//! that POSTs them in order ([`crate::outbound::webhook::post`]), retrying
//! after a connection error, a timeout or a 5xx answer.
//!
//! Invariants:
//! - An insert never waits for a delivery: firing a rule only pushes the
//!   alert's JSON onto the queue (a short lock, no I/O) and wakes the task.
//! - At most [`MAX_PENDING`] alerts and [`MAX_PENDING_BYTES`] of them wait
//!   per rule, the one being retried included; a push over either bound
//!   drops the oldest, counted as `dropped`.
//! - Retries wait [`Timing::first_retry`], doubling up to
//!   [`Timing::max_retry`], then every `max_retry`, until the alert is
//!   delivered, gets a final answer (4xx, a redirect, a policy refusal:
//!   counted `failed`) or is dropped; a delivery or a final answer resets
//!   the wait. Each attempt takes at most [`Timing::attempt_timeout`].
//! - The task dies with its rule: deleting the rule, or its store, or
//!   closing the store stops it ([`Outbox::stop`]); what was pending is
//!   lost (the queue lives in memory only, a restart loses it too).
//! - The URL reaches the log only redacted ([`crate::redact::url`]); header
//!   values never reach the log, `/metrics` or an API answer.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::outbound::policy::{Policy, Role};
use crate::outbound::webhook::{post, Outcome, Url};
use crate::redact;

/// The most alerts waiting per rule.
pub const MAX_PENDING: usize = 64;
/// The most alert bytes waiting per rule.
pub const MAX_PENDING_BYTES: usize = 1024 * 1024;

/// The delivery schedule.
#[derive(Debug, Clone)]
pub struct Timing {
    pub attempt_timeout: Duration,
    pub first_retry: Duration,
    pub max_retry: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            attempt_timeout: Duration::from_secs(10),
            first_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(60),
        }
    }
}

impl Timing {
    /// The wait after a retryable failure that followed a wait of `prev`
    /// (`None`: the first).
    pub fn next_wait(&self, prev: Option<Duration>) -> Duration {
        match prev {
            None => self.first_retry,
            Some(p) => (p * 2).min(self.max_retry),
        }
    }
}

/// What the delivery tasks need from the server.
pub struct Delivery {
    pub policy: Arc<Policy>,
    pub handle: tokio::runtime::Handle,
    pub timing: Timing,
}

impl Delivery {
    /// A delivery context on the current runtime (`None` outside one).
    pub fn current(policy: Arc<Policy>) -> Option<Delivery> {
        Some(Delivery {
            policy,
            handle: tokio::runtime::Handle::try_current().ok()?,
            timing: Timing::default(),
        })
    }
}

#[derive(Default)]
struct Queue {
    /// (sequence number, body), oldest first; the front is the one being
    /// attempted.
    items: VecDeque<(u64, String)>,
    bytes: usize,
    next: u64,
}

/// One rule's webhook: where to, the queue and the counters.
pub struct Outbox {
    rule: String,
    url: Url,
    /// The URL fit for the log.
    shown: String,
    headers: BTreeMap<String, String>,
    role: Role,
    queue: Mutex<Queue>,
    wake: Notify,
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    /// Attempts that did not deliver (each retry counts).
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

/// Counters of an outbox, for the API and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    pub pending: usize,
    pub delivered: u64,
    pub failed: u64,
    pub dropped: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

impl Outbox {
    pub fn new(
        rule: &str,
        url: &str,
        headers: BTreeMap<String, String>,
        role: Role,
    ) -> Result<Outbox, String> {
        let parsed = Url::parse(url)?;
        crate::outbound::webhook::check_headers(&headers)?;
        Ok(Outbox {
            rule: rule.to_string(),
            url: parsed,
            shown: redact::url(url),
            headers,
            role,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
            task: Mutex::new(None),
        })
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an alert body, dropping the oldest over the bounds. Never
    /// blocks on I/O.
    pub fn push(&self, body: String) {
        let mut q = self.queue();
        q.bytes += body.len();
        let seq = q.next;
        q.next += 1;
        q.items.push_back((seq, body));
        while q.items.len() > MAX_PENDING || (q.bytes > MAX_PENDING_BYTES && q.items.len() > 1) {
            let Some((_, old)) = q.items.pop_front() else {
                break;
            };
            q.bytes -= old.len();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        drop(q);
        self.wake.notify_one();
    }

    pub fn counts(&self) -> Counts {
        Counts {
            pending: self.queue().items.len(),
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// Starts the delivery task (once) of a rule of store `store`.
    pub fn start(self: &Arc<Self>, d: &Delivery, store: &str) {
        let mut task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if task.is_some() {
            return;
        }
        let (me, policy, timing) = (self.clone(), d.policy.clone(), d.timing.clone());
        let store = store.to_string();
        *task = Some(
            d.handle
                .spawn(async move { me.run(&store, &policy, &timing).await })
                .abort_handle(),
        );
    }

    /// Stops the delivery task and forgets what was pending.
    pub fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
        let mut q = self.queue();
        q.items.clear();
        q.bytes = 0;
    }

    /// The oldest pending alert, once there is one.
    async fn front(&self) -> (u64, String) {
        loop {
            if let Some(f) = self.queue().items.front().cloned() {
                return f;
            }
            // A push between the check and here left a permit: no lost
            // wake-up.
            self.wake.notified().await;
        }
    }

    /// Removes alert `seq` if it is still the oldest (it may have been
    /// dropped meanwhile).
    fn done(&self, seq: u64) {
        let mut q = self.queue();
        if q.items.front().is_some_and(|(s, _)| *s == seq) {
            if let Some((_, b)) = q.items.pop_front() {
                q.bytes -= b.len();
            }
        }
    }

    fn error(&self, e: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
    }

    async fn run(&self, store: &str, policy: &Policy, timing: &Timing) {
        let mut wait = None;
        loop {
            let (seq, body) = self.front().await;
            let (outcome, why) = post(
                policy,
                self.role,
                &self.url,
                &self.headers,
                body,
                timing.attempt_timeout,
            )
            .await;
            match outcome {
                Outcome::Delivered(_) => {
                    self.done(seq);
                    self.delivered.fetch_add(1, Ordering::Relaxed);
                    wait = None;
                }
                Outcome::Final(e) => {
                    self.done(seq);
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%store, rule = %self.rule, url = %self.shown, error = %e, reason = ?why.map(|r| r.as_str()), "webhook delivery failed, not retried");
                    self.error(e);
                    wait = None;
                }
                Outcome::Retry(e) => {
                    let w = timing.next_wait(wait);
                    tracing::warn!(%store, rule = %self.rule, url = %self.shown, error = %e, retry_in = ?w, "webhook delivery failed");
                    self.error(e);
                    wait = Some(w);
                    tokio::time::sleep(w).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox() -> Outbox {
        Outbox::new("r", "http://h/x", BTreeMap::new(), Role::Store).unwrap()
    }

    #[test]
    fn retries_wait_one_second_doubling_to_a_minute() {
        let t = Timing::default();
        let mut w = None;
        let mut got = Vec::new();
        for _ in 0..9 {
            let n = t.next_wait(w);
            got.push(n.as_secs());
            w = Some(n);
        }
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn the_queue_drops_the_oldest_over_its_bounds() {
        let o = outbox();
        for i in 0..MAX_PENDING + 3 {
            o.push(format!("{i}"));
        }
        let c = o.counts();
        assert_eq!((c.pending, c.dropped), (MAX_PENDING, 3));
        assert_eq!(o.queue().items.front().unwrap().1, "3");
        // The one being attempted is dropped too when newer ones crowd it
        // out: `done` then leaves the newer front alone.
        let front = o.queue().items.front().unwrap().0;
        o.push("x".into());
        o.done(front);
        assert_eq!(o.counts().pending, MAX_PENDING);
        let o = outbox();
        let big = "b".repeat(MAX_PENDING_BYTES / 4 + 1);
        for _ in 0..4 {
            o.push(big.clone());
        }
        let c = o.counts();
        assert_eq!((c.pending, c.dropped), (3, 1));
        assert!(o.queue().bytes <= MAX_PENDING_BYTES);
        o.stop();
        assert_eq!(o.counts().pending, 0);
    }
}
