//! Alert rules of a push connection, as the connection sees them: a set
//! it asks, for each object it sends, which alert messages go with it.
//! The rules themselves (condition language, cooldown, webhooks) are
//! `crate::rules`, which sits above this module and implements
//! [`Alerting`]; the server's state installs the [`Build`] function that
//! makes a set from a connection's persisted `rules`
//! ([`super::Outbound::set_alerting`]). So `outbound` never imports
//! `rules`, and `rules` may use `outbound`'s policy and webhook POST.

use std::sync::Arc;

use serde_json::Value;

use super::policy::Role;
use crate::store::Store;

/// A connection's rules.
pub trait Alerting: Send + Sync {
    /// Evaluates the rules on one object of `store` (its stored bytes) and
    /// returns the alert messages (`{"type":"alert",...}` JSON text) of
    /// those that fire; their webhooks are queued meanwhile. No I/O.
    fn evaluate(&self, store: &Store, timestamp: i64, stored: &[u8]) -> Vec<String>;
    /// How many rules.
    fn count(&self) -> usize;
    /// Alerts fired by all of them since the connection was loaded.
    fn fired(&self) -> u64;
    /// The rules as the API shows them (secrets masked).
    fn status(&self) -> Value;
    /// The delivery counters of the rules with a webhook, for `/metrics`.
    fn webhooks(&self) -> Vec<WebhookCounts>;
}

/// One rule's webhook deliveries since the connection was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookCounts {
    pub rule: String,
    pub delivered: u64,
    pub failed: u64,
    pub dropped: u64,
}

/// Makes the rules of a connection of store `store` from its persisted
/// `rules` and its creator's role; the error is a client's message.
pub type Build = dyn Fn(&str, &[Value], Role) -> Result<Arc<dyn Alerting>, String> + Send + Sync;
