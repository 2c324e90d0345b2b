//! The retry loop of an outbound connection: run a session, wait a capped
//! exponential backoff with jitter, run it again, until stopped. The
//! backoff resets after a healthy session (connected at least
//! [`Timing::healthy_after`]); a stop request ends the wait at once.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Timing of the supervisor and sessions; [`Timing::default`] in the
/// server, shorter ones in tests.
#[derive(Debug, Clone)]
pub struct Timing {
    /// First retry delay.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Each delay is drawn from `[d * (1 - jitter), d]`.
    pub jitter: f64,
    /// A session connected this long resets the backoff.
    pub healthy_after: Duration,
    pub ping_every: Duration,
    /// A ping unanswered (no frame at all) this long ends the session.
    pub pong_timeout: Duration,
    pub handshake_timeout: Duration,
    /// Cursors are persisted at most this often while running.
    pub persist_every: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            jitter: 0.2,
            healthy_after: Duration::from_secs(30),
            ping_every: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            persist_every: Duration::from_secs(1),
        }
    }
}

/// Capped exponential backoff with jitter.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: f64,
    base: Duration,
}

impl Backoff {
    pub fn new(t: &Timing) -> Backoff {
        Backoff {
            min: t.backoff_min,
            max: t.backoff_max,
            jitter: t.jitter.clamp(0.0, 1.0),
            base: t.backoff_min,
        }
    }

    /// The next delay, `r` in `[0, 1)` choosing within the jitter range;
    /// doubles the base for the following one.
    pub fn next_with(&mut self, r: f64) -> Duration {
        let d = self.base.mul_f64(1.0 - self.jitter * r.clamp(0.0, 1.0));
        self.base = (self.base * 2).min(self.max);
        d
    }

    /// The next delay with a random jitter.
    pub fn next_delay(&mut self) -> Duration {
        let r = (uuid::Uuid::new_v4().as_u128() as u64 >> 11) as f64 / (1u64 << 53) as f64;
        self.next_with(r)
    }

    pub fn reset(&mut self) {
        self.base = self.min;
    }
}

/// How a session (one dial and what follows) ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Asked to stop: the supervisor returns.
    Stopped,
    /// The dial failed.
    DialFailed,
    /// A session ran (connected at `since`) and ended, cleanly or not.
    Dropped { since: Instant },
}

/// Runs `session` again and again with [`Backoff`] between runs until it
/// returns [`Ended::Stopped`] or `stop` turns true while waiting.
pub async fn supervise<F, Fut>(timing: &Timing, mut stop: watch::Receiver<bool>, mut session: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Ended>,
{
    let mut backoff = Backoff::new(timing);
    loop {
        if *stop.borrow() {
            return;
        }
        // The session watches `stop` itself, so that it can close its
        // socket properly.
        let ended = session().await;
        match ended {
            Ended::Stopped => return,
            Ended::DialFailed => {}
            Ended::Dropped { since } => {
                if since.elapsed() >= timing.healthy_after {
                    backoff.reset();
                }
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Resolves once `stop` is true (or its sender is gone).
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn timing() -> Timing {
        Timing::default()
    }

    #[test]
    fn backoff_doubles_to_the_cap_within_the_jitter_range() {
        let t = timing();
        let mut b = Backoff::new(&t);
        let got: Vec<u64> = (0..9).map(|_| b.next_with(0.0).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        let mut b = Backoff::new(&t);
        for base in [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0] {
            let d = b.next_delay().as_secs_f64();
            assert!(d <= base && d >= base * (1.0 - t.jitter), "{d} vs {base}");
        }
        let mut b = Backoff::new(&t);
        b.next_with(0.5);
        b.next_with(0.5);
        assert_eq!(b.next_with(0.5), Duration::from_millis(3600));
        b.reset();
        assert_eq!(b.next_with(0.0), Duration::from_secs(1));
    }

    /// Runs the supervisor with sessions scripted by `script` (what each
    /// attempt does) and returns the start times of the attempts, relative
    /// to the first.
    async fn attempts(script: Vec<(Duration, bool)>) -> Vec<Duration> {
        let t = Timing {
            jitter: 0.0,
            ..timing()
        };
        let (stop_tx, stop) = watch::channel(false);
        let starts = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.into_iter()));
        let (s2, sc) = (starts.clone(), script.clone());
        let stop_tx = Arc::new(stop_tx);
        let stopper = stop_tx.clone();
        supervise(&t, stop, move || {
            let (s2, sc, stopper) = (s2.clone(), sc.clone(), stopper.clone());
            async move {
                let now = Instant::now();
                s2.lock().unwrap().push(now);
                let step = sc.lock().unwrap().next();
                match step {
                    None => {
                        stopper.send_replace(true);
                        Ended::Stopped
                    }
                    Some((up, connected)) => {
                        tokio::time::sleep(up).await;
                        if connected {
                            Ended::Dropped { since: now }
                        } else {
                            Ended::DialFailed
                        }
                    }
                }
            }
        })
        .await;
        let v = starts.lock().unwrap().clone();
        v.windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn failed_dials_back_off_exponentially_to_the_cap() {
        let gaps = attempts(vec![(Duration::ZERO, false); 9]).await;
        let secs: Vec<u64> = gaps.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_session_resets_the_backoff_a_short_one_does_not() {
        let s = Duration::from_secs;
        let gaps = attempts(vec![
            (s(0), false),
            (s(0), false),
            (s(0), false),
            // Up 5 s: not healthy, the next delay keeps doubling.
            (s(5), true),
            (s(0), false),
            // Up 31 s: healthy, back to 1 s.
            (s(31), true),
            (s(0), false),
        ])
        .await;
        let secs: Vec<u64> = gaps.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 5 + 8, 16, 31 + 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_ends_the_supervisor_while_it_waits() {
        let t = timing();
        let (tx, rx) = watch::channel(false);
        let runs = Arc::new(Mutex::new(0));
        let r2 = runs.clone();
        let task = tokio::spawn(async move {
            supervise(&t, rx, move || {
                *r2.lock().unwrap() += 1;
                async { Ended::DialFailed }
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(3500)).await;
        tx.send_replace(true);
        tokio::time::timeout(Duration::from_millis(10), task)
            .await
            .expect("stopped at once")
            .unwrap();
        // Attempts at 0, 1 and 3 s.
        assert_eq!(*runs.lock().unwrap(), 3);
    }
}
