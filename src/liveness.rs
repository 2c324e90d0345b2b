//! Liveness of the peer of a long-lived connection: when to ping it and
//! when to give it up. One deadline tracker for every WebSocket we hold
//! (the inbound streams and the outbound connections); it has no socket
//! and no timer in it: the caller tells it what happened ([`Tracker::heard`],
//! [`Tracker::pinged`], [`Tracker::data_sent`]), sleeps until
//! [`Tracker::next_wake`] and asks [`Tracker::due`] what to do then.
//!
//! A ping is due [`Tracker::new`]'s `ping_every` after the last one (after
//! the start for the first). When a peer counts as dead is its [`Rule`]:
//! - [`Rule::Silence`]: nothing heard from it for that long, pings or not
//!   (the inbound streams: 2.5 pings' worth);
//! - [`Rule::Unanswered`]: a ping got no frame back within that long; while
//!   a ping waits for its answer no other is sent (outbound connections).
//!
//! Invariants: a peer is dead at its deadline exactly, never before; any
//! frame heard moves the deadline on (or cancels it, for an unanswered
//! ping); `next_wake` is never later than the next ping or the deadline.
//! Death outranks a ping due at the same instant.

use std::time::Duration;

use tokio::time::Instant;

/// When a peer counts as dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Nothing heard from it for this long.
    Silence(Duration),
    /// A ping of ours got no frame back within this long.
    Unanswered(Duration),
}

/// What to do at a wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Nothing,
    Ping,
    /// Give the peer up.
    Dead,
}

/// The pings and the death deadline of one peer.
#[derive(Debug, Clone)]
pub struct Tracker {
    ping_every: Duration,
    rule: Rule,
    /// Bytes of data between two pings; `None`: pings by time only.
    ping_every_bytes: Option<usize>,
    last_heard: Instant,
    /// The last ping, or the start.
    last_ping: Instant,
    /// The first ping sent since the peer was last heard.
    unanswered_since: Option<Instant>,
    bytes_since_ping: usize,
}

impl Tracker {
    /// A peer connected at `now`, counted as heard then.
    pub fn new(now: Instant, ping_every: Duration, rule: Rule) -> Tracker {
        Tracker {
            ping_every,
            rule,
            ping_every_bytes: None,
            last_heard: now,
            last_ping: now,
            unanswered_since: None,
            bytes_since_ping: 0,
        }
    }

    /// Also pings before the data once `bytes` of it went out since the
    /// last ping (see [`Tracker::ping_before_data`]).
    pub fn ping_every_bytes(mut self, bytes: usize) -> Tracker {
        self.ping_every_bytes = Some(bytes);
        self
    }

    /// How long the rule lets a peer be silent or a ping go unanswered.
    pub fn patience(&self) -> Duration {
        match self.rule {
            Rule::Silence(d) | Rule::Unanswered(d) => d,
        }
    }

    /// A sign of life at `now`. Signs may be reported out of order (from
    /// two tasks): the latest counts.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = self.last_heard.max(now);
        self.unanswered_since = None;
    }

    /// A ping went out at `now`.
    pub fn pinged(&mut self, now: Instant) {
        self.last_ping = now;
        self.bytes_since_ping = 0;
        self.unanswered_since.get_or_insert(now);
    }

    /// `bytes` of data went out.
    pub fn data_sent(&mut self, bytes: usize) {
        self.bytes_since_ping = self.bytes_since_ping.saturating_add(bytes);
    }

    /// When the peer is dead if nothing is heard before; `None` while
    /// nothing can make it so (no ping waiting for its answer).
    pub fn dead_at(&self) -> Option<Instant> {
        match self.rule {
            Rule::Silence(d) => Some(self.last_heard + d),
            Rule::Unanswered(d) => self.unanswered_since.map(|at| at + d),
        }
    }

    /// When the next ping is due by time; `None` while a ping waits for
    /// its answer under [`Rule::Unanswered`].
    pub fn ping_at(&self) -> Option<Instant> {
        match (self.rule, self.unanswered_since) {
            (Rule::Unanswered(_), Some(_)) => None,
            _ => Some(self.last_ping + self.ping_every),
        }
    }

    /// When to look again: the next ping or the deadline, whichever comes
    /// first.
    pub fn next_wake(&self) -> Instant {
        match (self.ping_at(), self.dead_at()) {
            (Some(p), Some(d)) => p.min(d),
            (Some(t), None) | (None, Some(t)) => t,
            // Unreachable by construction (no ping due means one is
            // waiting, so there is a deadline); a wake-up that finds
            // nothing to do is harmless.
            (None, None) => self.last_ping + self.ping_every,
        }
    }

    /// What to do at `now`.
    pub fn due(&self, now: Instant) -> Due {
        if self.dead_at().is_some_and(|d| now >= d) {
            Due::Dead
        } else if self.ping_at().is_some_and(|p| now >= p) {
            Due::Ping
        } else {
            Due::Nothing
        }
    }

    /// True if a ping should go before the next data frame: one is due by
    /// time, or the byte budget since the last ping is spent. A client
    /// working through buffered data then meets pings as it reads, and its
    /// answers show it alive however slow it is.
    pub fn ping_before_data(&self, now: Instant) -> bool {
        self.ping_at().is_some_and(|p| now >= p)
            || self
                .ping_every_bytes
                .is_some_and(|b| self.bytes_since_ping >= b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    /// Lets `d` pass, asserting that `t` is alive until its last
    /// millisecond and dead at its end.
    async fn dead_exactly_after(t: &Tracker, d: Duration) {
        advance(d - MS).await;
        assert_ne!(t.due(Instant::now()), Due::Dead, "not dead before");
        advance(MS).await;
        assert_eq!(t.due(Instant::now()), Due::Dead, "dead at the deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_dead_at_its_deadline_and_not_before() {
        let t = Tracker::new(Instant::now(), 2 * S, Rule::Silence(5 * S));
        assert_eq!(t.dead_at(), Some(Instant::now() + 5 * S));
        dead_exactly_after(&t, 5 * S).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_heard_postpones_the_silence_deadline() {
        let start = Instant::now();
        let mut t = Tracker::new(start, 2 * S, Rule::Silence(5 * S));
        advance(4 * S).await;
        t.heard(Instant::now());
        advance(4 * S).await;
        assert_ne!(t.due(Instant::now()), Due::Dead, "8 s in, 4 s silent");
        assert_eq!(t.dead_at(), Some(start + 9 * S));
        // A sign of life reported late (from another task) moves nothing back.
        t.heard(start + S);
        assert_eq!(t.dead_at(), Some(start + 9 * S));
        advance(S).await;
        assert_eq!(t.due(Instant::now()), Due::Dead);
    }

    #[tokio::test(start_paused = true)]
    async fn pings_are_due_every_period_after_the_last_one() {
        let start = Instant::now();
        let mut t = Tracker::new(start, 2 * S, Rule::Silence(5 * S));
        assert_eq!(t.next_wake(), start + 2 * S);
        advance(2 * S - MS).await;
        assert_eq!(t.due(Instant::now()), Due::Nothing);
        advance(MS).await;
        assert_eq!(t.due(Instant::now()), Due::Ping);
        // Sent late: the next one is a period after it was sent.
        advance(Duration::from_millis(300)).await;
        t.pinged(Instant::now());
        assert_eq!(t.due(Instant::now()), Due::Nothing);
        assert_eq!(t.next_wake(), Instant::now() + 2 * S);
        // Under the silence rule, pings go on whether answered or not,
        // until the deadline outranks them.
        advance(2 * S).await;
        assert_eq!(t.due(Instant::now()), Due::Ping);
        t.pinged(Instant::now());
        assert_eq!(t.next_wake(), start + 5 * S);
        advance(S).await;
        assert_eq!(t.due(Instant::now()), Due::Dead);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_ping_is_dead_at_its_timeout_and_not_before() {
        let start = Instant::now();
        let mut t = Tracker::new(start, 20 * S, Rule::Unanswered(10 * S));
        // No ping out: silence alone kills nothing.
        assert_eq!(t.dead_at(), None);
        advance(20 * S).await;
        assert_eq!(t.due(Instant::now()), Due::Ping);
        t.pinged(Instant::now());
        // While the ping waits, no other is due; the wake-up is its timeout.
        assert_eq!(t.ping_at(), None);
        assert_eq!(t.next_wake(), start + 30 * S);
        dead_exactly_after(&t, 10 * S).await;
    }

    #[tokio::test(start_paused = true)]
    async fn any_frame_answers_a_ping() {
        let start = Instant::now();
        let mut t = Tracker::new(start, 20 * S, Rule::Unanswered(10 * S));
        advance(20 * S).await;
        t.pinged(Instant::now());
        advance(9 * S).await;
        t.heard(Instant::now());
        assert_eq!(t.dead_at(), None);
        // The next ping is a period after the last, not after the answer.
        assert_eq!(t.next_wake(), start + 40 * S);
        advance(S).await;
        assert_eq!(t.due(Instant::now()), Due::Nothing);
        advance(10 * S).await;
        assert_eq!(t.due(Instant::now()), Due::Ping);
        // A frame heard before the deadline, then silence: a new timeout.
        t.pinged(Instant::now());
        advance(10 * S).await;
        assert_eq!(t.due(Instant::now()), Due::Dead);
    }

    #[tokio::test(start_paused = true)]
    async fn data_pings_by_bytes_and_by_time() {
        let start = Instant::now();
        let mut t = Tracker::new(start, 2 * S, Rule::Silence(5 * S)).ping_every_bytes(64 * 1024);
        t.data_sent(64 * 1024 - 1);
        assert!(!t.ping_before_data(Instant::now()));
        // Bytes alone do not wake an idle stream: only data waits on them.
        assert_eq!(t.due(Instant::now()), Due::Nothing);
        t.data_sent(1);
        assert!(t.ping_before_data(Instant::now()));
        t.pinged(Instant::now());
        assert!(!t.ping_before_data(Instant::now()), "the budget restarts");
        advance(2 * S).await;
        assert!(t.ping_before_data(Instant::now()), "due by time");
        // Without a byte budget, bytes never call for a ping.
        let mut plain = Tracker::new(Instant::now(), 2 * S, Rule::Silence(5 * S));
        plain.data_sent(usize::MAX);
        plain.data_sent(1);
        assert!(!plain.ping_before_data(Instant::now()));
    }
}
