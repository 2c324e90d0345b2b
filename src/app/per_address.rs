//! Open HTTP connections per client address: `server.max_connections_per_address`,
//! so that one address reopening slow connections cannot take every place
//! of `server.max_connections` (README "Security", "Timeouts and caps").
//!
//! A client is an address as the authentication throttle counts it
//! ([`Client::of_ip`]: IPv6 by /64, an IPv4 address written as IPv6 is the
//! IPv4 address), loopback included: behind a reverse proxy every
//! connection comes from the proxy, and the README says to raise the cap
//! there.
//!
//! Invariants: a [`Slot`] is held for as long as its connection's socket
//! lives and gives its place back when dropped; the map holds only
//! addresses with at least one slot, each at most the cap, so it is never
//! larger than the number of open connections (bounded by the global cap)
//! plus the one being accepted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::throttle::Client;

/// The open connections of every address.
#[derive(Debug)]
pub struct PerAddress {
    cap: usize,
    open: Mutex<HashMap<Client, usize>>,
}

/// One connection's place in its address's count.
#[derive(Debug)]
pub struct Slot {
    owner: Arc<PerAddress>,
    client: Client,
}

impl PerAddress {
    /// At most `cap` connections per address.
    pub fn new(cap: usize) -> Arc<PerAddress> {
        Arc::new(PerAddress {
            cap,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more connection from `ip`, unless its address holds
    /// the cap already. Costs a map lookup: the caller refuses at once.
    pub fn take(self: &Arc<PerAddress>, ip: IpAddr) -> Option<Slot> {
        let client = Client::of_ip(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(client).or_default();
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(Slot {
            owner: self.clone(),
            client,
        })
    }

    /// Addresses with a connection open.
    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_address_gets_the_cap_and_gives_places_back() {
        let p = PerAddress::new(2);
        let a: Vec<Slot> = (0..2).map(|_| p.take(ip("10.0.0.1")).unwrap()).collect();
        assert!(p.take(ip("10.0.0.1")).is_none());
        // The same address written as IPv6, and the same /64: one client.
        assert!(p.take(ip("::ffff:10.0.0.1")).is_none());
        let b = p.take(ip("2001:db8::1")).unwrap();
        let b2 = p.take(ip("2001:db8::2:3")).unwrap();
        assert!(p.take(ip("2001:db8::ffff")).is_none());
        // Another address is not affected.
        let c = p.take(ip("10.0.0.2")).unwrap();
        assert_eq!(p.addresses(), 3);
        drop(a);
        let again = p.take(ip("10.0.0.1")).unwrap();
        // An address whose connections all closed is forgotten.
        drop((b, b2, c, again));
        assert_eq!(p.addresses(), 0);
    }

    #[test]
    fn a_refusal_takes_nothing() {
        let p = PerAddress::new(1);
        let s = p.take(ip("127.0.0.1")).unwrap();
        for _ in 0..100 {
            assert!(p.take(ip("127.0.0.1")).is_none());
        }
        drop(s);
        assert_eq!(p.addresses(), 0);
        assert!(p.take(ip("127.0.0.1")).is_some());
    }
}
