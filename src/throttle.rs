//! Failed authentications per client: a token bucket each, so that a key
//! guesser is slowed to a trickle while everyone else goes on.
//!
//! A client is its address (IPv6 by /64, the block one host usually
//! holds; an IPv4 address written as IPv6 is the IPv4 address), or, on the
//! Unix socket, its user id. Its bucket holds `server.auth_limit.burst`
//! tokens and refills at `burst` per `server.auth_limit.window_seconds`;
//! each failure takes a token ([`Throttle::fail`]). A credential is looked
//! at only while the client has a token left ([`Throttle::check`]), and a
//! store key's check is repeated right before its hash is computed (the
//! hash waits its turn, see [`crate::keys`]), so that a client with many
//! guesses in flight at once gets no more of them hashed than it has
//! tokens. With no token left an attempt is refused at once, unverified,
//! with the time until the next token ([`Throttled::retry_after`]).
//! Good credentials take nothing: many first requests at once with a new
//! key all pass.
//!
//! Invariants: the map holds buckets that are not full only (a full bucket
//! is the same as none) and at most [`MAX_CLIENTS`] of them; past that,
//! new clients share one bucket, so that a flood of addresses costs
//! bounded memory and still cannot guess faster than one client.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `server.auth_limit`: the token bucket of failed authentications per
/// client (see [`Throttle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthLimit {
    /// Failures a client may make in a row before it is refused.
    pub burst: u32,
    /// Time in which an exhausted bucket fills up again (one failure back
    /// every `window / burst`).
    pub window: Duration,
}

impl Default for AuthLimit {
    fn default() -> AuthLimit {
        AuthLimit {
            burst: 10,
            window: Duration::from_secs(10),
        }
    }
}

/// Most clients tracked one by one.
pub const MAX_CLIENTS: usize = 4096;

/// Whose failures count together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    /// An IPv4 address, or an IPv6 address with its low 64 bits cleared.
    Ip(IpAddr),
    /// A Unix-socket peer's user id.
    Uid(u32),
    /// The clients beyond [`MAX_CLIENTS`], and any whose address is unknown.
    Shared,
}

impl Client {
    /// The client of a TCP peer address.
    pub fn of_ip(ip: IpAddr) -> Client {
        match ip {
            IpAddr::V4(v4) => Client::Ip(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client::Ip(IpAddr::V4(v4)),
                None => {
                    let net = u128::from(v6) & !((1u128 << 64) - 1);
                    Client::Ip(IpAddr::V6(net.into()))
                }
            },
        }
    }
}

/// A refusal: no token left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// Whole seconds until the next attempt may be made (at least 1).
    pub retry_after: u64,
}

/// The message of a refused attempt (HTTP 429, socket `ERROR`).
pub const MESSAGE: &str = "too many failed authentication attempts, retry later";

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of every client.
pub struct Throttle {
    limit: AuthLimit,
    buckets: Mutex<HashMap<Client, Bucket>>,
    failures: AtomicU64,
    refused: AtomicU64,
}

impl Throttle {
    pub fn new(limit: AuthLimit) -> Throttle {
        Throttle {
            limit,
            buckets: Mutex::new(HashMap::new()),
            failures: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Tokens per second.
    fn rate(&self) -> f64 {
        f64::from(self.limit.burst) / self.limit.window.as_secs_f64()
    }

    fn full(&self) -> f64 {
        f64::from(self.limit.burst)
    }

    /// Refuses `client` if it has no failure left (without taking one).
    pub fn check(&self, client: Client) -> Result<(), Throttled> {
        self.check_at(client, Instant::now())
    }

    /// Counts a failure of `client`: one token less.
    pub fn fail(&self, client: Client) {
        self.fail_at(client, Instant::now())
    }

    /// The client's tokens at `now` (refilled since last seen).
    fn tokens(&self, b: &Bucket, now: Instant) -> f64 {
        (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * self.rate())
            .min(self.full())
    }

    /// [`Throttle::check`] at a given time (tests).
    pub fn check_at(&self, client: Client, now: Instant) -> Result<(), Throttled> {
        let map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let client = if map.contains_key(&client) || map.len() < MAX_CLIENTS {
            client
        } else {
            Client::Shared
        };
        let Some(b) = map.get(&client) else {
            return Ok(());
        };
        let tokens = self.tokens(b, now);
        if tokens >= 1.0 {
            return Ok(());
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        let wait = (1.0 - tokens) / self.rate();
        Err(Throttled {
            retry_after: (wait.ceil() as u64).max(1),
        })
    }

    /// [`Throttle::fail`] at a given time (tests).
    pub fn fail_at(&self, client: Client, now: Instant) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let client = if map.contains_key(&client) || map.len() < MAX_CLIENTS {
            client
        } else {
            // Make room: buckets that filled up again are forgotten.
            map.retain(|_, b| self.tokens(b, now) < self.full());
            if map.len() < MAX_CLIENTS {
                client
            } else {
                Client::Shared
            }
        };
        let full = self.full();
        let b = map.entry(client).or_insert(Bucket {
            tokens: full,
            at: now,
        });
        b.tokens = (self.tokens(b, now) - 1.0).max(0.0);
        b.at = now;
    }

    /// Failed attempts so far (for `/metrics`).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Attempts refused unverified so far (for `/metrics`).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Clients with a bucket that is not full.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    fn limit(burst: u32, secs: u64) -> AuthLimit {
        AuthLimit {
            burst,
            window: Duration::from_secs(secs),
        }
    }

    fn ip(s: &str) -> Client {
        Client::of_ip(s.parse().unwrap())
    }

    #[test]
    fn failures_empty_the_bucket_and_time_refills_it() {
        let t = Throttle::new(limit(10, 10));
        let now = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..10 {
            t.check_at(a, now).unwrap();
            t.fail_at(a, now);
        }
        assert_eq!(t.failures(), 10);
        // The 11th is refused, and says when to come back.
        let e = t.check_at(a, now).unwrap_err();
        assert_eq!(e.retry_after, 1);
        assert_eq!(t.refused(), 1);
        // Another client is not affected.
        t.check_at(ip("192.0.2.2"), now).unwrap();
        // One token a second comes back.
        let later = now + Duration::from_millis(1100);
        t.check_at(a, later).unwrap();
        t.fail_at(a, later);
        assert!(t.check_at(a, later).is_err());
        // A full window later, a full burst again.
        let full = later + Duration::from_secs(10);
        for _ in 0..10 {
            t.check_at(a, full).unwrap();
            t.fail_at(a, full);
        }
        assert!(t.check_at(a, full).is_err());
    }

    #[test]
    fn checks_cost_nothing_and_full_buckets_are_forgotten() {
        let t = Throttle::new(limit(2, 60));
        let now = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..100 {
            t.check_at(a, now).unwrap();
        }
        assert_eq!((t.failures(), t.tracked()), (0, 0));
        t.fail_at(a, now);
        assert_eq!(t.tracked(), 1);
        // Failures past an empty bucket keep it empty, no lower.
        t.fail_at(a, now);
        t.fail_at(a, now);
        let e = t.check_at(a, now).unwrap_err();
        assert_eq!(e.retry_after, 30);
    }

    #[test]
    fn the_retry_time_is_the_time_to_the_next_token() {
        // 3 per minute: a token every 20 s.
        let t = Throttle::new(limit(3, 60));
        let now = Instant::now();
        let a = ip("192.0.2.9");
        for _ in 0..3 {
            t.fail_at(a, now);
        }
        assert_eq!(t.check_at(a, now).unwrap_err().retry_after, 20);
        let e = t.check_at(a, now + Duration::from_secs(15)).unwrap_err();
        assert_eq!(e.retry_after, 5);
        t.check_at(a, now + Duration::from_secs(20)).unwrap();
    }

    #[test]
    fn clients_are_addresses_and_ipv6_blocks() {
        assert_eq!(ip("::ffff:10.1.2.3"), ip("10.1.2.3"));
        assert_eq!(ip("2001:db8:1:2::5"), ip("2001:db8:1:2:ffff::1"));
        assert_ne!(ip("2001:db8:1:2::5"), ip("2001:db8:1:3::5"));
        assert_eq!(
            Client::of_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            Client::Ip(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
        );
        assert_eq!(
            Client::of_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Client::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
    }

    #[test]
    fn a_flood_of_addresses_shares_one_bucket() {
        let t = Throttle::new(limit(1, 3600));
        let now = Instant::now();
        for i in 0..MAX_CLIENTS as u32 {
            let c = Client::of_ip(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)));
            t.fail_at(c, now);
        }
        assert_eq!(t.tracked(), MAX_CLIENTS);
        // A new address goes to the shared bucket: one failure there, and
        // every new address is refused.
        t.check_at(ip("192.0.2.1"), now).unwrap();
        t.fail_at(ip("192.0.2.1"), now);
        assert!(t.check_at(ip("192.0.2.2"), now).is_err());
        assert_eq!(t.tracked(), MAX_CLIENTS + 1);
        // Buckets that filled up again are dropped to make room.
        let later = now + Duration::from_secs(3600);
        t.fail_at(ip("192.0.2.3"), later);
        assert!(t.tracked() <= 2, "{}", t.tracked());
    }
}
