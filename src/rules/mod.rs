//! Store-level alert rules: each store's rules (persisted in its
//! directory as `rules.json`), their evaluation on every stored object, and
//! the ring of alerts they fired.
//!
//! Invariants:
//! - Evaluation runs from the engine's insert hook ([`Store::on_insert`]),
//!   the one place every ingest path (HTTP, NDJSON, Unix socket,
//!   `/ws/write`, pull connections, MQTT subscriptions) goes through after
//!   an acknowledged insert; no ingest path calls it itself. The hook is
//!   installed by the registry's `opened` hook when a store opens or is
//!   created, which also loads its rules (on the operation's thread, never
//!   under a lock of the registry).
//! - A store's rules are an immutable list swapped whole on each change:
//!   an insert takes one read lock and a reference count, and reads the
//!   object only when the store has rules: one pass over its bytes for the
//!   values the conditions compare ([`pick`]), the whole object only for
//!   an alert.
//! - The file is written (temp, fsync, rename, mode 0600) before the list
//!   in memory changes: what a client was told was created survives a
//!   restart. Edits of one store are serialized; other stores never wait.
//! - Everything a client controls is bounded: [`MAX_RULES`] per store,
//!   names of at most [`MAX_NAME`] characters, conditions by
//!   [`condition`]'s bounds, [`MAX_ALERTS`] alerts kept per store, holding
//!   at most [`MAX_ALERT_BYTES`] of objects, none over [`MAX_ALERT_DATA`].
//! - Counters (`alerts_fired`, `last_fired`) and alerts live in memory only.
//! - Push connections carry rules of the same kind ([`conn`]), evaluated
//!   on what they send rather than on inserts.
//! - A rule with a `webhook` has an [`Outbox`]: a firing queues the alert
//!   and returns; a background task delivers it ([`webhook`]). The task is
//!   stopped when the rule is removed, when its store is deleted or closed
//!   (the rules are forgotten or replaced), never left to run unowned.
//!   `webhook_headers` values are kept in `rules.json` (mode 0600) for the
//!   deliveries and never shown: [`Rule::status`] replaces them with `***`.

pub mod condition;
pub mod conn;
mod pick;
pub mod webhook;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use condition::{Condition, ParseError};
pub use webhook::{Delivery, Outbox};

use crate::outbound::policy::Role;
use crate::store::{self, DataType, Store};

/// The file of a store's rules, in its directory.
pub const FILE: &str = "rules.json";
/// The most rules one store has.
pub const MAX_RULES: usize = 32;
/// The longest rule name.
pub const MAX_NAME: usize = 64;
/// The alerts kept per store (the newest).
pub const MAX_ALERTS: usize = 1000;
/// The largest object an alert carries: a larger one's alert has `data`
/// null and `data_omitted` true (objects may be megabytes).
pub const MAX_ALERT_DATA: usize = 64 * 1024;
/// The most object bytes the alerts of one store hold together: the oldest
/// alerts go first.
pub const MAX_ALERT_BYTES: usize = 4 * 1024 * 1024;

/// A rule as a client sends it and as it is persisted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Spec {
    pub name: String,
    pub condition: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<String>,
    /// Where each alert is POSTed (`http://` or `https://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Headers of each POST (secrets: never shown, never logged).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub webhook_headers: BTreeMap<String, String>,
    /// Who created the rule: the outbound policy its webhook is held to.
    /// Not a client's field; a file without it reads as [`Role::Store`].
    #[serde(default)]
    pub created_by: Role,
}

/// Why a rule was refused (each a client fault; `Display` is the message).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    #[error("invalid rule name: 1 to {MAX_NAME} characters of A-Z, a-z, 0-9, '_', '.', '-'")]
    Name,
    #[error(transparent)]
    Condition(#[from] ParseError),
    #[error("invalid cooldown: {0}")]
    Cooldown(String),
    /// A bad `webhook` or `webhook_headers` (the message names no header
    /// value).
    #[error("{0}")]
    Webhook(String),
    #[error("rule '{0}' already exists")]
    Duplicate(String),
    #[error("a store has at most {MAX_RULES} rules")]
    TooMany,
    #[error("rules are only available for json and schema stores")]
    DataType,
    #[error("no rules for this store (not open)")]
    NotOpen,
    #[error("saving the rules: {0}")]
    Io(std::io::Error),
}

/// A parsed rule with its firing state.
pub struct Rule {
    pub spec: Spec,
    condition: Condition,
    cooldown_ns: i64,
    fired: AtomicU64,
    /// When it last fired (Unix nanoseconds).
    last: Mutex<Option<i64>>,
    /// The webhook's queue and task, if the rule has a webhook.
    webhook: Option<Arc<Outbox>>,
}

impl Drop for Rule {
    /// The delivery task holds the outbox: stop it with the rule.
    fn drop(&mut self) {
        if let Some(o) = &self.webhook {
            o.stop();
        }
    }
}

impl Rule {
    /// Parses and checks `spec`.
    pub fn new(spec: Spec) -> Result<Rule, RuleError> {
        let n = &spec.name;
        if n.is_empty()
            || n.len() > MAX_NAME
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(RuleError::Name);
        }
        let condition = Condition::parse(&spec.condition)?;
        let cooldown_ns = match spec.cooldown.as_deref().map(str::trim) {
            None | Some("0") | Some("") => 0,
            Some(c) => {
                let d = crate::duration::parse(c).map_err(RuleError::Cooldown)?;
                i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
            }
        };
        if spec.webhook.is_none() && !spec.webhook_headers.is_empty() {
            return Err(RuleError::Webhook(
                "invalid webhook_headers: only with a webhook".into(),
            ));
        }
        let webhook = match &spec.webhook {
            None => None,
            Some(url) => Some(Arc::new(
                Outbox::new(
                    &spec.name,
                    url,
                    spec.webhook_headers.clone(),
                    spec.created_by,
                )
                .map_err(RuleError::Webhook)?,
            )),
        };
        Ok(Rule {
            spec,
            condition,
            cooldown_ns,
            fired: AtomicU64::new(0),
            last: Mutex::new(None),
            webhook,
        })
    }

    /// The rule's webhook, if it has one.
    pub fn webhook(&self) -> Option<&Arc<Outbox>> {
        self.webhook.as_ref()
    }

    /// The rule as GET shows it.
    pub fn status(&self) -> Value {
        let last = *self.last.lock().unwrap_or_else(|e| e.into_inner());
        let mut v = serde_json::json!({
            "name": self.spec.name,
            "condition": self.spec.condition,
            "cooldown": self.spec.cooldown.clone().unwrap_or_else(|| "0".into()),
            "alerts_fired": self.fired.load(Ordering::Relaxed),
            "last_fired": last,
        });
        if let (Some(url), Some(o)) = (&self.spec.webhook, &self.webhook) {
            let c = o.counts();
            // Header values are secrets: names only, each value masked.
            let headers: serde_json::Map<String, Value> = self
                .spec
                .webhook_headers
                .keys()
                .map(|k| (k.clone(), Value::String(crate::redact::MASK.into())))
                .collect();
            v["webhook"] = Value::String(url.clone());
            v["webhook_headers"] = Value::Object(headers);
            v["webhook_pending"] = c.pending.into();
            v["webhook_delivered"] = c.delivered.into();
            v["webhook_failed"] = c.failed.into();
            v["webhook_dropped"] = c.dropped.into();
            v["webhook_failures"] = c.failures.into();
            v["last_webhook_error"] = c.last_error.map_or(Value::Null, Value::String);
        }
        v
    }

    pub fn alerts_fired(&self) -> u64 {
        self.fired.load(Ordering::Relaxed)
    }

    /// True if the rule fires now (`now` in Unix nanoseconds): its cooldown
    /// since the last firing has passed. Records the firing.
    fn fire(&self, now: i64) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = *last {
            if self.cooldown_ns > 0 && now.saturating_sub(l) < self.cooldown_ns {
                return false;
            }
        }
        *last = Some(now);
        self.fired.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// A fired alert.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub rule: String,
    /// The object's timestamp (Unix nanoseconds).
    pub timestamp: i64,
    pub data: Value,
    /// When the rule fired (Unix nanoseconds).
    pub fired_at: i64,
    /// The object was over [`MAX_ALERT_DATA`]: `data` is null.
    pub data_omitted: bool,
    /// The stored size of `data` (what the ring's byte bound counts).
    #[serde(skip)]
    size: usize,
}

impl Alert {
    /// The alert as a message: `{"type":"alert","rule":..,"timestamp":..,"data":..}`,
    /// plus `fired_at`.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::json!({
            "type": "alert",
            "rule": self.rule,
            "timestamp": self.timestamp,
            "data": self.data,
            "fired_at": self.fired_at,
        });
        if self.data_omitted {
            v["data_omitted"] = Value::Bool(true);
        }
        v
    }
}

/// The rules and alerts of one store.
pub struct StoreRules {
    name: String,
    dir: PathBuf,
    /// Where webhook tasks run (none: webhooks queue and are not sent).
    delivery: Option<Arc<Delivery>>,
    list: RwLock<Arc<Set>>,
    /// Whether `list` holds a rule: read on every insert, so a store
    /// without rules pays one atomic load and nothing else.
    any: AtomicBool,
    alerts: Mutex<Ring>,
    /// Serializes edits (and their file writes) of this store only.
    edit: Mutex<()>,
}

/// A store's rules, with their conditions compiled against one plan of
/// the fields they read.
struct Set {
    rules: Arc<[Arc<Rule>]>,
    plan: pick::Plan,
    /// `rules[i]`'s condition is `checks[i]`.
    checks: Vec<pick::Check>,
}

impl Set {
    fn new(rules: Vec<Arc<Rule>>) -> Set {
        let (plan, checks) = pick::Plan::new(rules.iter().map(|r| &r.condition));
        Set {
            rules: rules.into(),
            plan,
            checks,
        }
    }
}

/// The newest alerts, and the object bytes they hold.
#[derive(Default)]
struct Ring {
    alerts: VecDeque<Alert>,
    bytes: usize,
}

impl Ring {
    fn push(&mut self, a: Alert) {
        self.bytes += a.size;
        self.alerts.push_back(a);
        while self.alerts.len() > MAX_ALERTS || self.bytes > MAX_ALERT_BYTES {
            match self.alerts.pop_front() {
                Some(old) => self.bytes -= old.size,
                None => break,
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
struct File {
    rules: Vec<Spec>,
}

impl StoreRules {
    /// Loads the rules of store `name` in `dir` (none if it has no file),
    /// starting their webhooks' tasks. A rule that no longer parses is
    /// logged and skipped.
    fn load(name: &str, dir: &Path, delivery: Option<Arc<Delivery>>) -> StoreRules {
        let specs = match std::fs::read(dir.join(FILE)) {
            Ok(b) => match serde_json::from_slice::<File>(&b) {
                Ok(f) => f.rules,
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "unreadable rules file: no rules loaded");
                    Vec::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot read the rules file");
                Vec::new()
            }
        };
        let list: Vec<Arc<Rule>> = specs
            .into_iter()
            .take(MAX_RULES)
            .filter_map(|s| match Rule::new(s) {
                Ok(r) => Some(Arc::new(r)),
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "skipping a stored rule");
                    None
                }
            })
            .collect();
        let rules = StoreRules {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            delivery,
            any: AtomicBool::new(!list.is_empty()),
            list: RwLock::new(Arc::new(Set::new(list))),
            alerts: Mutex::new(Ring::default()),
            edit: Mutex::new(()),
        };
        for r in rules.list().iter() {
            rules.start(r);
        }
        rules
    }

    /// Starts the webhook task of `rule`, if it has a webhook.
    fn start(&self, rule: &Rule) {
        if let (Some(o), Some(d)) = (&rule.webhook, &self.delivery) {
            o.start(d, &self.name);
        }
    }

    /// Stops every webhook task (the store is deleted or closed).
    pub fn stop(&self) {
        self.any.store(false, Ordering::Release);
        for r in self.list().iter() {
            if let Some(o) = &r.webhook {
                o.stop();
            }
        }
    }

    /// An empty set (tests and benches).
    pub fn empty(dir: &Path) -> StoreRules {
        StoreRules {
            name: String::new(),
            dir: dir.to_path_buf(),
            delivery: None,
            any: AtomicBool::new(false),
            list: RwLock::new(Arc::new(Set::new(Vec::new()))),
            alerts: Mutex::new(Ring::default()),
            edit: Mutex::new(()),
        }
    }

    pub fn list(&self) -> Arc<[Arc<Rule>]> {
        self.set().rules.clone()
    }

    fn set(&self) -> Arc<Set> {
        self.list.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Rule>> {
        self.list().iter().find(|r| r.spec.name == name).cloned()
    }

    /// Writes `list` to the file, then publishes it.
    fn save(&self, list: Vec<Arc<Rule>>) -> Result<(), RuleError> {
        let file = File {
            rules: list.iter().map(|r| r.spec.clone()).collect(),
        };
        let mut text = serde_json::to_vec_pretty(&file).map_err(|e| RuleError::Io(e.into()))?;
        text.push(b'\n');
        store::fs::replace(&store::fs::RealFs, &self.dir, FILE, &text, 0o600)
            .map_err(RuleError::Io)?;
        let mut cur = self.list.write().unwrap_or_else(|e| e.into_inner());
        self.any.store(!list.is_empty(), Ordering::Release);
        *cur = Arc::new(Set::new(list));
        Ok(())
    }

    /// Adds a rule. Blocking (writes the file).
    pub fn add(&self, rule: Rule) -> Result<Arc<Rule>, RuleError> {
        let _one = self.edit.lock().unwrap_or_else(|e| e.into_inner());
        let mut list = self.list().to_vec();
        if list.iter().any(|r| r.spec.name == rule.spec.name) {
            return Err(RuleError::Duplicate(rule.spec.name.clone()));
        }
        if list.len() >= MAX_RULES {
            return Err(RuleError::TooMany);
        }
        let rule = Arc::new(rule);
        list.push(rule.clone());
        self.save(list)?;
        self.start(&rule);
        Ok(rule)
    }

    /// Removes rule `name`; false if there is none. Blocking.
    pub fn remove(&self, name: &str) -> Result<bool, RuleError> {
        let _one = self.edit.lock().unwrap_or_else(|e| e.into_inner());
        let mut list = self.list().to_vec();
        let Some(i) = list.iter().position(|r| r.spec.name == name) else {
            return Ok(false);
        };
        let gone = list.remove(i);
        self.save(list)?;
        // An insert may still hold the old list (and the rule) a moment:
        // stop its deliveries now rather than when the last holder lets go.
        if let Some(o) = &gone.webhook {
            o.stop();
        }
        Ok(true)
    }

    /// The newest `limit` alerts, newest first.
    pub fn alerts(&self, limit: usize) -> Vec<Alert> {
        let a = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
        a.alerts.iter().rev().take(limit).cloned().collect()
    }

    /// Evaluates the rules on one stored object of `store` (its stored
    /// bytes: JSON text, or compact schema bytes, expanded here).
    pub fn evaluate(&self, store: &Store, timestamp: i64, stored: &[u8]) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let fired = self.set().fire(store, timestamp, stored);
        if fired.is_empty() {
            return;
        }
        let mut ring = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
        for a in fired {
            ring.push(a);
        }
    }
}

impl Set {
    /// Evaluates the rules on one stored object of `store` and returns the
    /// alerts of those that fire, their webhooks queued.
    fn fire(&self, store: &Store, timestamp: i64, stored: &[u8]) -> Vec<Alert> {
        let mut out = Vec::new();
        if self.rules.is_empty() {
            return out;
        }
        let expanded;
        let json: &[u8] = match store.config().data_type {
            DataType::Json => stored,
            DataType::Schema => match store.decode_value(stored, false) {
                Ok(b) => {
                    expanded = b;
                    &expanded
                }
                Err(_) => return out,
            },
            _ => return out,
        };
        // Only the values the conditions compare are read; the whole
        // object is built only when a rule fires (its alert carries it).
        let mut leaves = Vec::with_capacity(self.plan.slots());
        if self.plan.read(json, &mut leaves).is_err() {
            return out;
        }
        let mut whole: Option<Value> = None;
        let mut now = None;
        for (r, check) in self.rules.iter().zip(&self.checks) {
            if !check.eval(&leaves) {
                continue;
            }
            let at = *now.get_or_insert_with(store::now_ns);
            if r.fire(at) {
                let omitted = stored.len() > MAX_ALERT_DATA;
                let data = if omitted {
                    Value::Null
                } else {
                    whole
                        .get_or_insert_with(|| serde_json::from_slice(json).unwrap_or(Value::Null))
                        .clone()
                };
                let alert = Alert {
                    rule: r.spec.name.clone(),
                    timestamp,
                    data,
                    fired_at: at,
                    data_omitted: omitted,
                    size: if omitted { 0 } else { stored.len() },
                };
                if let Some(o) = &r.webhook {
                    o.push(alert.to_json().to_string());
                }
                out.push(alert);
            }
        }
        out
    }
}

/// The rules of every open store, by name.
#[derive(Default)]
pub struct Rules {
    stores: Mutex<HashMap<String, Arc<StoreRules>>>,
    delivery: Option<Arc<Delivery>>,
}

impl Rules {
    /// Rules whose webhooks queue alerts but never send them (tests,
    /// benches).
    pub fn new() -> Rules {
        Rules::default()
    }

    /// The rules of a push connection of store `store`, from its persisted
    /// `rules`, their webhooks held to `role` and started.
    pub fn conn_rules(
        &self,
        store: &str,
        specs: &[Value],
        role: Role,
    ) -> Result<conn::ConnRules, RuleError> {
        conn::ConnRules::new(store, specs, role, self.delivery.as_ref())
    }

    /// Rules whose webhooks deliver through `delivery`.
    pub fn with_delivery(delivery: Option<Delivery>) -> Rules {
        Rules {
            stores: Mutex::default(),
            delivery: delivery.map(Arc::new),
        }
    }

    /// Loads the rules of store `name` (directory `dir`), just opened or
    /// created, and hooks their evaluation to its inserts. Blocking (reads
    /// the file): runs on the registry operation's thread.
    pub fn attach(&self, name: &str, dir: &Path, store: &Arc<Store>) {
        let rules = Arc::new(StoreRules::load(name, dir, self.delivery.clone()));
        let (hooked, weak): (Arc<StoreRules>, Weak<Store>) = (rules.clone(), Arc::downgrade(store));
        store.on_insert(move |t, d| {
            if !hooked.any.load(Ordering::Acquire) {
                return;
            }
            if let Some(s) = weak.upgrade() {
                hooked.evaluate(&s, t, d);
            }
        });
        let old = self.lock().insert(name.to_string(), rules);
        // Reopened (a reset, a reopen): the old rules' deliveries end.
        if let Some(old) = old {
            old.stop();
        }
    }

    /// Forgets store `name` (deleted: its file went with its directory)
    /// and stops its rules' deliveries.
    pub fn remove(&self, name: &str) {
        let old = self.lock().remove(name);
        if let Some(old) = old {
            old.stop();
        }
    }

    /// The rules of open store `name`.
    pub fn get(&self, name: &str) -> Option<Arc<StoreRules>> {
        self.lock().get(name).cloned()
    }

    /// Every store's rules, sorted by store name (for `/metrics`).
    pub fn all(&self) -> Vec<(String, Arc<StoreRules>)> {
        let mut v: Vec<_> = self
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<StoreRules>>> {
        self.stores.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(name: &str, cond: &str, cooldown: Option<&str>) -> Spec {
        Spec {
            name: name.into(),
            condition: cond.into(),
            cooldown: cooldown.map(Into::into),
            ..Spec::default()
        }
    }

    #[test]
    fn names_and_cooldowns_are_checked() {
        for bad in ["", "a b", "x/y", "é", &"a".repeat(65)] {
            assert!(
                matches!(Rule::new(spec(bad, "a > 1", None)), Err(RuleError::Name)),
                "{bad}"
            );
        }
        assert!(Rule::new(spec(&"a".repeat(64), "a > 1", None)).is_ok());
        assert!(Rule::new(spec("A-z_0.9", "a > 1", Some("1m"))).is_ok());
        assert!(matches!(
            Rule::new(spec("r", "a > 1", Some("soon"))),
            Err(RuleError::Cooldown(_))
        ));
    }

    fn alert(size: usize) -> Alert {
        Alert {
            rule: "r".into(),
            timestamp: 0,
            data: Value::Null,
            fired_at: 0,
            data_omitted: false,
            size,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_within_its_count_and_bytes() {
        let mut r = Ring::default();
        for _ in 0..MAX_ALERTS + 5 {
            r.push(alert(10));
        }
        assert_eq!((r.alerts.len(), r.bytes), (MAX_ALERTS, MAX_ALERTS * 10));
        let mut r = Ring::default();
        for _ in 0..70 {
            r.push(alert(MAX_ALERT_DATA));
        }
        assert_eq!(r.alerts.len(), MAX_ALERT_BYTES / MAX_ALERT_DATA);
        assert!(r.bytes <= MAX_ALERT_BYTES);
    }

    #[test]
    fn cooldown_spaces_firings() {
        let r = Rule::new(spec("r", "a > 1", Some("10s"))).unwrap();
        assert!(r.fire(0));
        assert!(!r.fire(9_999_999_999));
        assert!(r.fire(10_000_000_000));
        assert_eq!(r.alerts_fired(), 2);
        let r = Rule::new(spec("r", "a > 1", None)).unwrap();
        assert!(r.fire(5) && r.fire(5));
    }

    #[test]
    fn rules_persist_and_fire_into_the_ring() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(
            Store::create(
                dir.path(),
                "s",
                store::Config {
                    num_blocks: 64,
                    data_type: DataType::Json,
                    ..store::Config::default()
                },
            )
            .unwrap(),
        );
        let sdir = dir.path().join("s");
        let rules = Rules::new();
        rules.attach("s", &sdir, &s);
        let sr = rules.get("s").unwrap();
        sr.add(Rule::new(spec("hot", "t > 30", None)).unwrap())
            .unwrap();
        assert!(matches!(
            sr.add(Rule::new(spec("hot", "t > 1", None)).unwrap()),
            Err(RuleError::Duplicate(_))
        ));
        s.insert(1, br#"{"t": 31}"#).unwrap();
        s.insert(2, br#"{"t": 20}"#).unwrap();
        s.insert_batch([
            (Some(3), &br#"{"t": 40}"#[..]),
            (Some(4), &br#"{"t": 1}"#[..]),
        ]);
        let a = sr.alerts(10);
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].timestamp, &a[0].data), (3, &json!({"t": 40})));
        assert_eq!(a[1].timestamp, 1);
        let mode =
            std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(sdir.join(FILE)).unwrap());
        assert_eq!(mode & 0o777, 0o600);
        let again = StoreRules::load("s", &sdir, None);
        assert_eq!(again.list().len(), 1);
        assert!(sr.remove("hot").unwrap());
        assert!(!sr.remove("hot").unwrap());
        assert!(StoreRules::load("s", &sdir, None).list().is_empty());
        for i in 0..MAX_RULES {
            sr.add(Rule::new(spec(&format!("r{i}"), "t > 1", None)).unwrap())
                .unwrap();
        }
        assert!(matches!(
            sr.add(Rule::new(spec("one-more", "t > 1", None)).unwrap()),
            Err(RuleError::TooMany)
        ));
    }
}
