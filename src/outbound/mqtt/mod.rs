//! MQTT links of a store, both ways, as kinds of [`super::links`]:
//!
//! - sinks (`/api/stores/:store/mqtt/connections`, `mqtt_connections.json`):
//!   publish the store's objects to a broker topic;
//! - subscriptions (`/api/stores/:store/mqtt/subscriptions`,
//!   `mqtt_subscriptions.json`): store what a broker's topics carry.
//!
//! This file holds what both share: the broker URL, and the dial through
//! the outbound policy with the `ca_file` rules of the WebSocket
//! connections. The client is rumqttc (MQTT 3.1.1) over rustls (ring).
//!
//! A `tcp://` dial connects to an address the policy passed (the name is
//! resolved once, by the policy check). A `ssl://` dial gives the client
//! the host name, which it resolves again, because the TLS server name and
//! certificate check need the name: a DNS answer that changed in between
//! to an address the policy refuses can reach only a TLS handshake, which
//! fails unless that address holds a certificate for the name.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, EventLoop, MqttOptions, TlsConfiguration, Transport};

use super::links::{Ctx, Kind, Links};
use super::policy::{split_authority, Policy, Target};
use super::supervise::Timing;
use super::tls::client_tls;
use crate::metrics::Metrics;
use crate::registry::Registry;

pub mod sink;
pub mod subscribe;

pub use sink::Sink;
pub use subscribe::Subscription;

/// The MQTT links of every store.
pub struct Mqtt {
    pub sinks: Arc<Links<Sink>>,
    pub subscriptions: Arc<Links<Subscription>>,
}

impl Mqtt {
    pub fn new(
        stores: &Arc<Registry>,
        metrics: &Arc<Metrics>,
        timing: Timing,
        policy: Arc<Policy>,
        max_future: Duration,
    ) -> Mqtt {
        Mqtt {
            sinks: Arc::new(Links::new(
                stores.clone(),
                metrics.clone(),
                timing.clone(),
                policy.clone(),
                max_future,
            )),
            subscriptions: Arc::new(Links::new(
                stores.clone(),
                metrics.clone(),
                timing,
                policy,
                max_future,
            )),
        }
    }

    /// Restarts the persisted links (server start).
    pub async fn start(&self) {
        self.sinks.start().await;
        self.subscriptions.start().await;
    }

    /// Stops the links of a store being deleted.
    pub async fn remove_store(&self, name: &str) {
        self.sinks.remove_store(name).await;
        self.subscriptions.remove_store(name).await;
    }

    /// Stops every link, persisting the cursors (shutdown).
    pub async fn stop_all(&self) {
        self.sinks.stop_all().await;
        self.subscriptions.stop_all().await;
    }
}

/// Where a broker is: `tcp://host[:port]` or `ssl://host[:port]`
/// (`mqtt://` and `mqtts://` are aliases; ports 1883 and 8883 by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// Lowercase, without brackets.
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// The error for a bad `broker_url` (names no part of it).
pub const BAD_BROKER_URL: &str =
    "invalid broker_url: must be tcp://host[:port] or ssl://host[:port] (mqtt:// and mqtts:// also accepted)";

impl Broker {
    pub fn parse(url: &str) -> Result<Broker, String> {
        let bad = || BAD_BROKER_URL.to_string();
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "tcp" | "mqtt" => false,
            "ssl" | "mqtts" => true,
            _ => return Err(bad()),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        // Credentials go in `username` and `password`, never in the URL
        // (which is shown in status objects and logs).
        if authority.is_empty()
            || authority
                .chars()
                .any(|c| matches!(c, '/' | '?' | '#' | '@') || c.is_whitespace() || c.is_control())
        {
            return Err(bad());
        }
        let (host, port) =
            split_authority(authority, if tls { 8883 } else { 1883 }).ok_or_else(bad)?;
        Ok(Broker { host, port, tls })
    }

    /// The policy's view of the broker.
    pub fn target(&self) -> Target {
        Target {
            host: self.host.clone(),
            port: self.port,
            tls: self.tls,
        }
    }
}

/// How a link logs in and what it may carry.
#[derive(Debug, Clone)]
pub struct Login<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub clean_session: bool,
    /// Messages in flight (QoS 1 and 2), at least 1.
    pub inflight: u16,
    /// The largest packet either way.
    pub max_packet: usize,
    /// Acknowledge received publishes only when told to
    /// ([`AsyncClient::ack`]).
    pub manual_acks: bool,
}

/// Keep-alive of every MQTT link: a broker gone silent is noticed within
/// one and a half of these.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// A client for `broker`, through the outbound policy and the link's
/// `ca_file`. Nothing is sent until the event loop is polled; the first
/// poll dials (within the handshake timeout).
pub async fn client<K: Kind>(
    ctx: &Ctx<K>,
    broker: &Broker,
    login: &Login<'_>,
    requests: usize,
) -> Result<(AsyncClient, EventLoop), String> {
    let addrs = ctx.resolve(&broker.target()).await?;
    let host = if broker.tls {
        broker.host.clone()
    } else {
        addrs[0].ip().to_string()
    };
    let mut o = MqttOptions::new(login.client_id, host, broker.port);
    o.set_keep_alive(KEEP_ALIVE)
        .set_clean_session(login.clean_session || login.client_id.is_empty())
        .set_inflight(login.inflight.max(1))
        .set_max_packet_size(login.max_packet, login.max_packet)
        .set_manual_acks(login.manual_acks);
    if let Some(u) = login.username {
        o.set_credentials(u, login.password.unwrap_or(""));
    }
    if broker.tls {
        let extra = ctx.ca_certificates().await?;
        let cfg = client_tls(extra)?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(cfg)));
    }
    let (client, mut events) = AsyncClient::new(o, requests.max(1));
    let mut net = rumqttc::NetworkOptions::new();
    net.set_connection_timeout(ctx.timing.handshake_timeout.as_secs().max(1));
    events.set_network_options(net);
    Ok((client, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let b = |u: &str| Broker::parse(u).unwrap();
        assert_eq!(
            b("tcp://Broker.LAN"),
            Broker {
                host: "broker.lan".into(),
                port: 1883,
                tls: false
            }
        );
        assert_eq!(b("mqtt://h:1884/").port, 1884);
        assert_eq!(
            b("ssl://h"),
            Broker {
                host: "h".into(),
                port: 8883,
                tls: true
            }
        );
        assert!(b("mqtts://h:8884").tls);
        assert_eq!(b("tcp://[::1]:1999").host, "::1");
        assert_eq!(b("tcp://[::1]").port, 1883);
        assert_eq!(b("TCP://10.0.0.1:1").host, "10.0.0.1");
        for bad in [
            "",
            "h:1883",
            "http://h",
            "ws://h",
            "tcp://",
            "tcp://:1883",
            "tcp://h:0",
            "tcp://h:65536",
            "tcp://h:x",
            "tcp://u:p@h",
            "tcp://h/topic",
            "tcp://h?x=1",
            "tcp://h#x",
            "tcp://h h",
            "tcp://::1",
            "tcp://[nothost]:1",
            "tcp://[::1]x",
        ] {
            assert_eq!(Broker::parse(bad), Err(BAD_BROKER_URL.into()), "{bad:?}");
        }
    }
}
