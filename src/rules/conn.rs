//! The alert rules of a push connection: the same rule objects as a
//! store's (`{name, condition, cooldown?, webhook?, webhook_headers?}`,
//! checked by [`Rule::new`]), evaluated on each object the connection
//! sends; a firing is sent on the connection right after the object and
//! POSTed to the rule's webhook. The rules are part of the connection
//! (persisted in `ws_connections.json` with it, deleted with it); their
//! webhooks are held to the connection creator's role. Counters live in
//! memory only.

use std::sync::Arc;

use serde_json::Value;

use super::{Delivery, Rule, RuleError, Set, Spec, MAX_RULES};
use crate::outbound::alerting::{Alerting, WebhookCounts};
use crate::outbound::policy::Role;
use crate::store::Store;

/// A connection's rules.
pub struct ConnRules {
    set: Set,
}

impl ConnRules {
    /// Checks and parses `specs` (each a rule object), at most
    /// [`MAX_RULES`] with distinct names, and starts their webhooks.
    pub fn new(
        store: &str,
        specs: &[Value],
        role: Role,
        delivery: Option<&Arc<Delivery>>,
    ) -> Result<ConnRules, RuleError> {
        if specs.len() > MAX_RULES {
            return Err(RuleError::TooMany);
        }
        let mut rules: Vec<Arc<Rule>> = Vec::with_capacity(specs.len());
        for v in specs {
            let mut spec: Spec = serde_json::from_value(v.clone())
                .map_err(|_| RuleError::Webhook("invalid rule: expected a rule object".into()))?;
            spec.created_by = role;
            let r = Rule::new(spec)?;
            if rules.iter().any(|o| o.spec.name == r.spec.name) {
                return Err(RuleError::Duplicate(r.spec.name.clone()));
            }
            rules.push(Arc::new(r));
        }
        if let Some(d) = delivery {
            for r in &rules {
                if let Some(o) = r.webhook() {
                    o.start(d, store);
                }
            }
        }
        Ok(ConnRules {
            set: Set::new(rules),
        })
    }
}

impl ConnRules {
    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.set.rules
    }
}

impl Alerting for ConnRules {
    fn evaluate(&self, store: &Store, timestamp: i64, stored: &[u8]) -> Vec<String> {
        self.set
            .fire(store, timestamp, stored)
            .iter()
            .map(|a| a.to_json().to_string())
            .collect()
    }

    fn count(&self) -> usize {
        self.set.rules.len()
    }

    fn fired(&self) -> u64 {
        self.set.rules.iter().map(|r| r.alerts_fired()).sum()
    }

    fn status(&self) -> Value {
        Value::Array(self.set.rules.iter().map(|r| r.status()).collect())
    }

    fn webhooks(&self) -> Vec<WebhookCounts> {
        self.set
            .rules
            .iter()
            .filter_map(|r| {
                let c = r.webhook()?.counts();
                Some(WebhookCounts {
                    rule: r.spec.name.clone(),
                    delivered: c.delivered,
                    failed: c.failed,
                    dropped: c.dropped,
                })
            })
            .collect()
    }
}
