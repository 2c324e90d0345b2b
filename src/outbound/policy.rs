//! The outbound policy: which addresses an outbound connection may dial,
//! and from which directory a client-named CA file may be read.
//!
//! A store key is handed to sensor scripts and partners; the server sits on
//! a gateway that can reach the LAN, its own loopback services and the
//! cloud metadata address. So a connection created with a store key may
//! not dial the loopback, link-local (169.254.169.254 included), private
//! (RFC 1918, CGNAT, IPv6 ULA), reserved, unspecified, multicast or
//! broadcast addresses, nor the server's own listening ports on its own
//! addresses, unless an `allow` entry (`server.outbound.allow`) matches. A
//! connection created with the admin key may dial anything but the
//! unspecified, multicast and broadcast addresses. A `deny` entry refuses
//! for both, and wins over `allow`.
//!
//! Invariants:
//! - The decision is taken on resolved addresses, at create and again at
//!   every dial: a name is resolved, every address is checked, and the
//!   session connects to the addresses that passed and no other, so a name
//!   that later resolves elsewhere (DNS rebinding) is caught at the next
//!   dial.
//! - IPv4 addresses written in IPv6 (mapped, compatible, NAT64, 6to4) are
//!   judged by the IPv4 address they carry.
//! - A refusal tells the client only that the policy refused (one text),
//!   never whether something answers there; the reason goes to the log.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;

/// Default of `server.outbound.ca_dir`.
pub const DEFAULT_CA_DIR: &str = "/etc/tsstore/ca";

/// `server.outbound`: what outbound connections may dial and read (see
/// [this module](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundConfig {
    /// The only directory a connection's `ca_file` may name a file in.
    pub ca_dir: PathBuf,
    /// Lift the built-in denials (store keys) for what they match.
    pub allow: Vec<Rule>,
    /// Refused for every connection; wins over `allow`.
    pub deny: Vec<Rule>,
}

impl Default for OutboundConfig {
    fn default() -> OutboundConfig {
        OutboundConfig {
            ca_dir: PathBuf::from(DEFAULT_CA_DIR),
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }
}

use serde::{Deserialize, Serialize};

/// The text of every refusal by the policy, on create (403) and in
/// `last_error`.
pub const REFUSED: &str = "url refused by the outbound policy";

/// Who created a connection: decides the rules it is held to. Persisted
/// with the connection; a file written before roles existed reads as
/// [`Role::Store`], the stricter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    #[default]
    Store,
}

/// Why the policy refuses an address (for the log, never for the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A `deny` entry matches.
    Denied,
    Unspecified,
    Multicast,
    Broadcast,
    Loopback,
    LinkLocal,
    Private,
    Reserved,
    /// One of the server's own listening ports on one of its addresses.
    OwnPort,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Denied => "a deny entry matches",
            Refusal::Unspecified => "unspecified address",
            Refusal::Multicast => "multicast address",
            Refusal::Broadcast => "broadcast address",
            Refusal::Loopback => "loopback address",
            Refusal::LinkLocal => "link-local address",
            Refusal::Private => "private address",
            Refusal::Reserved => "reserved address",
            Refusal::OwnPort => "the server's own port",
        }
    }

    /// Refused whoever asks: no peer can be there.
    fn is_absolute(self) -> bool {
        matches!(
            self,
            Refusal::Unspecified | Refusal::Multicast | Refusal::Broadcast
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an entry of `allow` or `deny` matches by host.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    /// An address or a CIDR block.
    Net {
        addr: IpAddr,
        prefix: u8,
    },
    /// The URL's host name, exactly (lowercase, no trailing dot).
    Name(String),
    /// Names under this domain (stored with its leading dot).
    Suffix(String),
}

/// An entry of `server.outbound.allow` or `deny`: a host (an address, a
/// CIDR block, a name, `*.domain`, or `*`/nothing for any) and optionally
/// a port or port range. `192.168.1.20:21080`, `10.0.0.0/8`,
/// `[fd00::/8]:443`, `::1`, `historian.lan`, `*.example.com:443`, `:22`,
/// `*:8000-8099`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    host: HostPattern,
    ports: Option<(u16, u16)>,
}

impl FromStr for Rule {
    type Err = String;

    fn from_str(s: &str) -> Result<Rule, String> {
        let s = s.trim();
        let bad = |why: &str| Err(format!("invalid entry {s:?}: {why}"));
        if s.is_empty() {
            return bad("empty");
        }
        // A bare IPv6 address or block has colons of its own: no port.
        let (host, ports) = if let Some(rest) = s.strip_prefix('[') {
            let Some((h, after)) = rest.split_once(']') else {
                return bad("no closing ]");
            };
            match after {
                "" => (h, None),
                _ => match after.strip_prefix(':') {
                    Some(p) => (h, Some(p)),
                    None => return bad("expected :port after ]"),
                },
            }
        } else if s.matches(':').count() > 1 {
            (s, None)
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let ports = match ports {
            None => None,
            Some(p) => match parse_ports(p) {
                Some(r) => Some(r),
                None => return bad("ports must be N or N-M, from 1 to 65535"),
            },
        };
        let host = match parse_host(host) {
            Some(h) => h,
            None => return bad("expected an address, a CIDR block, a host name or *"),
        };
        Ok(Rule { host, ports })
    }
}

fn parse_ports(p: &str) -> Option<(u16, u16)> {
    let (a, b) = p.split_once('-').unwrap_or((p, p));
    let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
    (a >= 1 && a <= b).then_some((a, b))
}

fn parse_host(h: &str) -> Option<HostPattern> {
    if h.is_empty() || h == "*" {
        return Some(HostPattern::Any);
    }
    if let Some((a, len)) = h.split_once('/') {
        let written = a.parse::<IpAddr>().ok()?;
        let max = if written.is_ipv4() { 32 } else { 128 };
        let mut prefix = len.parse::<u8>().ok().filter(|&n| n <= max)?;
        let addr = canonical(written);
        // `::ffff:10.0.0.0/104` is the IPv4 block 10.0.0.0/8.
        if addr.is_ipv4() && written.is_ipv6() {
            prefix = prefix.checked_sub(96)?;
        }
        return Some(HostPattern::Net { addr, prefix });
    }
    if let Ok(a) = h.parse::<IpAddr>() {
        let addr = canonical(a);
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        return Some(HostPattern::Net { addr, prefix });
    }
    let (suffix, name) = match h.strip_prefix("*.") {
        Some(n) => (true, n),
        None => (false, h),
    };
    let name = normalise_name(name);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return None;
    }
    Some(if suffix {
        HostPattern::Suffix(format!(".{name}"))
    } else {
        HostPattern::Name(name)
    })
}

fn normalise_name(n: &str) -> String {
    n.trim_end_matches('.').to_ascii_lowercase()
}

impl Rule {
    /// True if the entry matches a dial of `addr` for the URL host `name`
    /// (`None` when the URL names an address).
    fn matches(&self, name: Option<&str>, ip: IpAddr, port: u16) -> bool {
        if let Some((a, b)) = self.ports {
            if port < a || port > b {
                return false;
            }
        }
        match &self.host {
            HostPattern::Any => true,
            HostPattern::Net { addr, prefix } => in_block(ip, *addr, *prefix),
            HostPattern::Name(n) => name == Some(n.as_str()),
            HostPattern::Suffix(s) => name.is_some_and(|n| n.len() > s.len() && n.ends_with(s)),
        }
    }
}

fn in_block(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it
/// is: a dual-stack socket dialling it reaches that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<Refusal> {
    let o = ip.octets();
    Some(match o {
        [0, ..] => Refusal::Unspecified,
        [255, 255, 255, 255] => Refusal::Broadcast,
        [224..=239, ..] => Refusal::Multicast,
        [127, ..] => Refusal::Loopback,
        [169, 254, ..] => Refusal::LinkLocal,
        [10, ..] | [192, 168, ..] => Refusal::Private,
        [172, b, ..] if (16..32).contains(&b) => Refusal::Private,
        // Shared address space (CGNAT), often the provider's side of a
        // gateway.
        [100, b, ..] if (64..128).contains(&b) => Refusal::Private,
        [240..=255, ..] | [192, 0, 0, _] | [198, 18..=19, ..] => Refusal::Reserved,
        _ => return None,
    })
}

/// The IPv4 address an IPv6 address carries in a way that reaches it:
/// IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`), 6to4
/// (`2002::/16`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0; 6] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

fn v6_class(ip: Ipv6Addr) -> Option<Refusal> {
    let s0 = ip.segments()[0];
    if ip.is_unspecified() {
        Some(Refusal::Unspecified)
    } else if ip.is_loopback() {
        Some(Refusal::Loopback)
    } else if s0 & 0xff00 == 0xff00 {
        Some(Refusal::Multicast)
    } else if s0 & 0xffc0 == 0xfe80 {
        Some(Refusal::LinkLocal)
    } else if s0 & 0xfe00 == 0xfc00 || s0 & 0xffc0 == 0xfec0 {
        // Unique local, and the deprecated site-local.
        Some(Refusal::Private)
    } else {
        embedded_v4(ip).and_then(v4_class)
    }
}

/// The built-in class of an address that is not public, if any.
fn class(ip: IpAddr) -> Option<Refusal> {
    match canonical(ip) {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
}

/// True if `ip` is one of this machine's addresses: the loopback and
/// unspecified addresses, or one a socket can be bound to.
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// Where a `ws://` or `wss://` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host as written, lowercase, without brackets or a trailing dot.
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl Target {
    /// Parses a `ws://` or `wss://` URL with a host and a valid port (the
    /// scheme's default if none). The error names no part of the URL.
    pub fn parse(url: &str) -> Result<Target, String> {
        let bad = || "invalid url: must be a ws:// or wss:// URL with a host".to_string();
        let uri: tokio_tungstenite::tungstenite::http::Uri = url.parse().map_err(|_| bad())?;
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(bad()),
        };
        let authority = uri.authority().ok_or_else(bad)?.as_str();
        let host_port = authority.rsplit('@').next().unwrap_or("");
        let (host, port) =
            split_authority(host_port, if tls { 443 } else { 80 }).ok_or_else(bad)?;
        Ok(Target { host, port, tls })
    }

    /// The host as an address, if the URL names one.
    fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// Splits a URL authority without userinfo (`host`, `host:port`,
/// `[v6]`, `[v6]:port`) into its host (lowercase, without brackets or a
/// trailing dot) and port (`default` when none). `None` when malformed:
/// an empty host, brackets around anything but an IPv6 address, anything
/// after `]` but `:port`, or a port outside 1-65535 (which `http::Uri`
/// reads as no port: refused rather than dialed on the default one). The
/// one parser of the hosts the server dials (WebSocket connections,
/// brokers, webhooks).
pub fn split_authority(authority: &str, default: u16) -> Option<(String, u16)> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (h, after) = rest.split_once(']')?;
            h.parse::<std::net::Ipv6Addr>().ok()?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':')?),
            };
            (h, port)
        }
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let host = normalise_name(host);
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None => default,
        Some(p) => p.parse::<u16>().ok().filter(|&p| p > 0)?,
    };
    Some((host, port))
}

/// Why a dial cannot go ahead.
#[derive(Debug)]
pub enum ResolveError {
    Refused(Refusal),
    /// The name did not resolve (the resolver's text).
    Unresolved(String),
}

/// The outbound policy of the server (`server.outbound`).
#[derive(Debug)]
pub struct Policy {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
    ca_dir: PathBuf,
    /// The server's listening ports, known once it is bound.
    own_ports: Mutex<Vec<u16>>,
}

impl Policy {
    pub fn new(cfg: &OutboundConfig) -> Policy {
        Policy {
            allow: cfg.allow.clone(),
            deny: cfg.deny.clone(),
            ca_dir: cfg.ca_dir.clone(),
            own_ports: Mutex::new(Vec::new()),
        }
    }

    /// The directory a `ca_file` must be in.
    pub fn ca_dir(&self) -> &std::path::Path {
        &self.ca_dir
    }

    /// Records the ports the server listens on.
    pub fn set_own_ports(&self, ports: &[u16]) {
        *self.own_ports.lock().unwrap_or_else(|e| e.into_inner()) = ports.to_vec();
    }

    /// The decision for a dial of `addr` by a connection of `role` whose
    /// URL names host `name` (`None` for an address).
    pub fn decide(&self, role: Role, name: Option<&str>, addr: SocketAddr) -> Result<(), Refusal> {
        self.decide_with(role, name, addr, is_local)
    }

    /// [`Policy::decide`] with the test for "one of this machine's
    /// addresses" given.
    pub fn decide_with(
        &self,
        role: Role,
        name: Option<&str>,
        addr: SocketAddr,
        is_local: impl Fn(IpAddr) -> bool,
    ) -> Result<(), Refusal> {
        let (ip, port) = (canonical(addr.ip()), addr.port());
        let builtin = class(ip);
        if let Some(r) = builtin.filter(|r| r.is_absolute()) {
            return Err(r);
        }
        if self.deny.iter().any(|r| r.matches(name, ip, port)) {
            return Err(Refusal::Denied);
        }
        if role == Role::Admin || self.allow.iter().any(|r| r.matches(name, ip, port)) {
            return Ok(());
        }
        if let Some(r) = builtin {
            return Err(r);
        }
        let own = self
            .own_ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&port);
        if own && is_local(ip) {
            return Err(Refusal::OwnPort);
        }
        Ok(())
    }

    /// Resolves `t` and returns the addresses the policy lets `role` dial,
    /// in the resolver's order: the only addresses a session may connect
    /// to. Refused if none passes.
    pub async fn resolve(&self, role: Role, t: &Target) -> Result<Vec<SocketAddr>, ResolveError> {
        let (name, all): (Option<&str>, Vec<SocketAddr>) = match t.ip() {
            Some(ip) => (None, vec![SocketAddr::new(ip, t.port)]),
            None => {
                let found = tokio::net::lookup_host((t.host.as_str(), t.port))
                    .await
                    .map_err(|e| ResolveError::Unresolved(e.to_string()))?;
                (Some(t.host.as_str()), found.collect())
            }
        };
        let mut first_refusal = None;
        let mut passed = Vec::with_capacity(all.len());
        for a in all {
            match self.decide(role, name, a) {
                Ok(()) => passed.push(a),
                Err(r) => {
                    first_refusal.get_or_insert(r);
                }
            }
        }
        match (passed.is_empty(), first_refusal) {
            (false, _) => Ok(passed),
            (true, Some(r)) => Err(ResolveError::Refused(r)),
            (true, None) => Err(ResolveError::Unresolved("no address".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_split_into_host_and_port_or_are_refused() {
        let ok = |a: &str| split_authority(a, 80).map(|(h, p)| format!("{h} {p}"));
        assert_eq!(ok("Example.ORG.").as_deref(), Some("example.org 80"));
        assert_eq!(ok("h:8080").as_deref(), Some("h 8080"));
        assert_eq!(ok("[::1]").as_deref(), Some("::1 80"));
        assert_eq!(ok("[fe80::1]:443").as_deref(), Some("fe80::1 443"));
        for bad in [
            "", ":80", "h:0", "h:65536", "h:x", "[::1]x", "[::1]:", "[nope]", "[::1", ".",
        ] {
            assert_eq!(ok(bad), None, "{bad:?}");
        }
    }

    fn policy(allow: &[&str], deny: &[&str]) -> Policy {
        let rules = |v: &[&str]| v.iter().map(|s| s.parse().unwrap()).collect();
        let p = Policy::new(&OutboundConfig {
            allow: rules(allow),
            deny: rules(deny),
            ..OutboundConfig::default()
        });
        p.set_own_ports(&[21080]);
        p
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// The decision for an address URL, this machine owning 192.168.1.5.
    fn decide(p: &Policy, role: Role, addr: &str) -> Result<(), Refusal> {
        p.decide_with(role, None, sa(addr), |ip| {
            ip.is_loopback() || ip == IpAddr::from([192, 168, 1, 5])
        })
    }

    #[test]
    fn store_keys_reach_public_addresses_only_by_default() {
        let p = policy(&[], &[]);
        let s = Role::Store;
        for (addr, want) in [
            ("127.0.0.1:9000", Refusal::Loopback),
            ("127.8.9.10:80", Refusal::Loopback),
            ("[::1]:9000", Refusal::Loopback),
            ("[::ffff:127.0.0.1]:9000", Refusal::Loopback),
            ("[::127.0.0.1]:9000", Refusal::Loopback),
            ("169.254.169.254:80", Refusal::LinkLocal),
            ("[fe80::1]:80", Refusal::LinkLocal),
            ("[::ffff:169.254.169.254]:80", Refusal::LinkLocal),
            ("[64:ff9b::a9fe:a9fe]:80", Refusal::LinkLocal),
            ("[2002:a9fe:a9fe::1]:80", Refusal::LinkLocal),
            ("10.1.2.3:502", Refusal::Private),
            ("172.16.0.1:80", Refusal::Private),
            ("172.31.255.255:80", Refusal::Private),
            ("192.168.1.20:554", Refusal::Private),
            ("100.64.0.1:80", Refusal::Private),
            ("[fd12:3456::1]:80", Refusal::Private),
            ("[fec0::1]:80", Refusal::Private),
            ("0.0.0.0:80", Refusal::Unspecified),
            ("0.1.2.3:80", Refusal::Unspecified),
            ("[::]:80", Refusal::Unspecified),
            ("224.0.0.1:80", Refusal::Multicast),
            ("[ff02::1]:80", Refusal::Multicast),
            ("255.255.255.255:80", Refusal::Broadcast),
            ("240.0.0.1:80", Refusal::Reserved),
        ] {
            assert_eq!(decide(&p, s, addr), Err(want), "{addr}");
        }
        for addr in [
            "93.184.215.14:443",
            "172.32.0.1:80",
            "100.128.0.1:80",
            "[2606:4700::1111]:443",
            "1.1.1.1:21080",
        ] {
            assert_eq!(decide(&p, s, addr), Ok(()), "{addr}");
        }
    }

    #[test]
    fn the_admin_key_reaches_everything_but_nowhere() {
        let p = policy(&[], &["10.9.9.9", ":23"]);
        let a = Role::Admin;
        for addr in [
            "127.0.0.1:21080",
            "[::1]:9",
            "169.254.169.254:80",
            "192.168.1.20:554",
        ] {
            assert_eq!(decide(&p, a, addr), Ok(()), "{addr}");
        }
        assert_eq!(decide(&p, a, "0.0.0.0:80"), Err(Refusal::Unspecified));
        assert_eq!(decide(&p, a, "[ff02::1]:80"), Err(Refusal::Multicast));
        assert_eq!(decide(&p, a, "10.9.9.9:80"), Err(Refusal::Denied));
        assert_eq!(decide(&p, a, "1.1.1.1:23"), Err(Refusal::Denied));
    }

    #[test]
    fn the_servers_own_port_on_its_own_addresses() {
        let p = policy(&[], &[]);
        let s = Role::Store;
        // Private anyway, but refused for its port too once allowed.
        let p2 = policy(&["192.168.1.0/24:21080"], &[]);
        assert_eq!(decide(&p2, s, "192.168.1.5:21080"), Ok(()));
        let p3 = policy(&["2.2.2.2"], &[]);
        let own = |ip: IpAddr| ip == IpAddr::from([2, 2, 2, 2]);
        // A public address of this machine on the server's port.
        assert_eq!(
            p.decide_with(s, None, sa("2.2.2.2:21080"), own),
            Err(Refusal::OwnPort)
        );
        assert_eq!(p.decide_with(s, None, sa("2.2.2.2:21081"), own), Ok(()));
        // Another machine's port 21080 (another tsstore): fine.
        assert_eq!(p.decide_with(s, None, sa("3.3.3.3:21080"), own), Ok(()));
        // An allow entry lifts it.
        assert_eq!(p3.decide_with(s, None, sa("2.2.2.2:21080"), own), Ok(()));
    }

    #[test]
    fn allow_lifts_the_defaults_for_what_it_names_deny_wins() {
        let p = policy(
            &[
                "192.168.1.20:21080",
                "10.0.0.0/8",
                "[::1]:9000-9001",
                "historian.lan",
                "*.plant.local:443",
            ],
            &["10.6.6.6", "[::1]:9001"],
        );
        let s = Role::Store;
        // A LAN peer on its port, not on another.
        assert_eq!(decide(&p, s, "192.168.1.20:21080"), Ok(()));
        assert_eq!(
            decide(&p, s, "192.168.1.20:22"),
            Err(Refusal::Private),
            "other port"
        );
        assert_eq!(decide(&p, s, "192.168.1.21:21080"), Err(Refusal::Private));
        assert_eq!(decide(&p, s, "10.200.0.1:80"), Ok(()));
        assert_eq!(decide(&p, s, "10.6.6.6:80"), Err(Refusal::Denied));
        assert_eq!(decide(&p, s, "[::1]:9000"), Ok(()));
        assert_eq!(decide(&p, s, "[::1]:9001"), Err(Refusal::Denied));
        assert_eq!(decide(&p, s, "[::1]:9002"), Err(Refusal::Loopback));
        // Names match the URL's host, whatever it resolves to.
        let by_name = |name: &str, addr: &str| p.decide_with(s, Some(name), sa(addr), |_| false);
        assert_eq!(by_name("historian.lan", "192.168.7.7:8080"), Ok(()));
        assert_eq!(
            by_name("evil.lan", "192.168.7.7:8080"),
            Err(Refusal::Private)
        );
        assert_eq!(by_name("a.plant.local", "172.20.0.1:443"), Ok(()));
        assert_eq!(
            by_name("a.plant.local", "172.20.0.1:80"),
            Err(Refusal::Private)
        );
        assert_eq!(
            by_name("plant.local", "172.20.0.1:443"),
            Err(Refusal::Private)
        );
        // Written as a mapped IPv6 address: the same IPv4 rules.
        assert_eq!(decide(&p, s, "[::ffff:10.6.6.6]:80"), Err(Refusal::Denied));
        assert_eq!(decide(&p, s, "[::ffff:10.1.1.1]:80"), Ok(()));
    }

    #[test]
    fn rules_parse_and_bad_ones_are_refused() {
        for good in [
            "1.2.3.4",
            "1.2.3.4:80",
            "10.0.0.0/8",
            "10.0.0.0/8:80-90",
            "::1",
            "fd00::/8",
            "[::1]:9000",
            "[fd00::/8]:443",
            "host.example",
            "HOST.example.:80",
            "*.example.com",
            "*",
            ":22",
            "*:8000-8099",
            "::ffff:10.0.0.0/104",
        ] {
            assert!(good.parse::<Rule>().is_ok(), "{good}");
        }
        for bad in [
            "",
            " ",
            "1.2.3.4:0",
            "1.2.3.4:70000",
            "1.2.3.4:90-80",
            "10.0.0.0/33",
            "::/129",
            "[::1",
            "[::1]x",
            "bad host",
            "a..b",
            "*.",
            "x/8",
            "::ffff:10.0.0.0/8",
        ] {
            assert!(bad.parse::<Rule>().is_err(), "{bad:?}");
        }
        let r: Rule = "::ffff:10.0.0.0/104".parse().unwrap();
        assert!(r.matches(None, "10.1.2.3".parse().unwrap(), 1));
    }

    #[test]
    fn targets_of_urls() {
        let t = |u: &str| Target::parse(u);
        assert_eq!(
            t("ws://127.0.0.1:9000/x?y=1").unwrap(),
            Target {
                host: "127.0.0.1".into(),
                port: 9000,
                tls: false
            }
        );
        assert_eq!(t("wss://Example.COM./p").unwrap().host, "example.com");
        assert_eq!(t("wss://example.com/p").unwrap().port, 443);
        assert_eq!(t("ws://example.com").unwrap().port, 80);
        assert_eq!(t("ws://[::1]:9/").unwrap().host, "::1");
        assert_eq!(t("ws://u:p@h:9/").unwrap().host, "h");
        for bad in [
            "http://example.com",
            "ws://",
            "ws://h:99999/",
            "ws://h:0/",
            "ws://h:/",
            "not a url",
            "",
            "/relative",
        ] {
            // One text, which never repeats the URL (it may hold a key).
            assert_eq!(
                t(bad).unwrap_err(),
                "invalid url: must be a ws:// or wss:// URL with a host",
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn dials_go_only_to_addresses_that_passed() {
        let p = policy(&[], &[]);
        let t = Target::parse("ws://127.0.0.1:9/").unwrap();
        assert!(matches!(
            p.resolve(Role::Store, &t).await,
            Err(ResolveError::Refused(Refusal::Loopback))
        ));
        assert_eq!(
            p.resolve(Role::Admin, &t).await.unwrap(),
            [sa("127.0.0.1:9")]
        );
        // A name is judged by what it resolves to.
        let t = Target::parse("ws://localhost:9/").unwrap();
        assert!(matches!(
            p.resolve(Role::Store, &t).await,
            Err(ResolveError::Refused(Refusal::Loopback))
        ));
        let got = p.resolve(Role::Admin, &t).await.unwrap();
        assert!(!got.is_empty() && got.iter().all(|a| a.ip().is_loopback()));
    }
}
