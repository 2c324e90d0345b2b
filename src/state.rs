//! The state every part of the server shares ([`AppState`]), and the
//! wiring of the store lifecycle's side effects: the registry owns create,
//! delete, reset and open (and the key cache); the hooks made here add
//! what belongs to other parts (outbound and MQTT links stopped and their
//! files, console sessions ended, `/metrics`), once, for every caller.
//!
//! Invariant: the areas (`api`, `stream`, `ingest`, `console`) reach each
//! other's services only through this state, never by importing each other.

use std::sync::Arc;

use axum::http::StatusCode;

use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::keys::KeyCache;
use crate::metrics::Metrics;
use crate::outbound::mqtt::Mqtt;
use crate::outbound::{self, Outbound};
use crate::registry::{Hooks, Registry};
use crate::rules::Rules;
use crate::session::{Console, Scope};
use crate::store;
use crate::summary::{self, LinkCounts, Rates, StoreSummary};
use crate::throttle::Throttle;

/// State shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub stores: Arc<Registry>,
    pub keys: Arc<KeyCache>,
    pub metrics: Arc<Metrics>,
    /// Set to true when the server starts shutting down: long-lived
    /// streams close themselves (1001) instead of holding it up.
    pub shutdown: Arc<tokio::sync::watch::Sender<bool>>,
    /// The outbound WebSocket connections of every store.
    pub outbound: Arc<Outbound>,
    /// The MQTT sinks and subscriptions of every store.
    pub mqtt: Arc<Mqtt>,
    /// The web console's sessions and start time.
    pub console: Arc<Console>,
    /// Failed authentications per client.
    pub throttle: Arc<Throttle>,
    /// The alert rules of every open store.
    pub rules: Arc<Rules>,
    /// The short history of each store's insert counter (insert rates).
    pub rates: Arc<Rates>,
}

impl AppState {
    /// The figures of every store `scope` opens (only `only` if given),
    /// by name: one counter sample and one stats read a store.
    pub async fn summary(&self, scope: &Scope, only: Option<&str>) -> Vec<StoreSummary> {
        let registry = self.stores.clone();
        let all = tokio::task::spawn_blocking(move || registry.list())
            .await
            .unwrap_or_default();
        if only.is_none() && scope.is_admin() {
            self.rates.retain(&all);
        }
        let names: Vec<String> = all
            .into_iter()
            .filter(|n| scope.opens(n) && only.is_none_or(|o| o == n))
            .collect();
        // Together: a store that is recovering delays the answer by one
        // BUSY_WAIT at most, and shows as such.
        let opened =
            futures_util::future::join_all(names.iter().map(|n| self.stores.open(n))).await;
        let links: Vec<LinkCounts> = names.iter().map(|n| self.link_counts(n)).collect();
        let rates = self.rates.clone();
        tokio::task::spawn_blocking(move || {
            names
                .into_iter()
                .zip(opened)
                .zip(links)
                .map(|((name, s), links)| {
                    let figures = s.map_err(|e| e.to_string()).and_then(|s| {
                        summary::figures(&rates, &name, &s).map_err(|e| e.to_string())
                    });
                    let (figures, error) = match figures {
                        Ok(f) => (Some(f), None),
                        Err(e) => (None, Some(e)),
                    };
                    StoreSummary {
                        name,
                        error,
                        figures,
                        links,
                    }
                })
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    /// A store's outbound links (WebSocket connections, MQTT sinks and
    /// subscriptions) counted by status.
    pub fn link_counts(&self, name: &str) -> LinkCounts {
        let mut c = LinkCounts::default();
        let statuses = self
            .outbound
            .list(name)
            .iter()
            .map(|l| l.status().as_str())
            .chain(
                self.mqtt
                    .sinks
                    .list(name)
                    .iter()
                    .map(|l| l.status().as_str()),
            )
            .chain(
                self.mqtt
                    .subscriptions
                    .list(name)
                    .iter()
                    .map(|l| l.status().as_str()),
            )
            .collect::<Vec<_>>();
        for st in statuses {
            *c.0.entry(st.to_string()).or_default() += 1;
        }
        c
    }

    pub fn new(config: Config) -> AppState {
        let config = Arc::new(config);
        let keys = Arc::new(KeyCache::new());
        let stores = Arc::new(Registry::new(config.base_path.clone(), keys.clone()));
        let metrics = Arc::new(Metrics::default());
        let outbound = Arc::new(Outbound::new(
            stores.clone(),
            metrics.clone(),
            outbound::Timing::default(),
            outbound::policy::Policy::new(&config.outbound),
            config.max_future,
        ));
        let mqtt = Arc::new(Mqtt::new(
            &stores,
            &metrics,
            outbound::Timing::default(),
            outbound.policy().clone(),
            config.max_future,
        ));
        let console = Arc::new(Console::new());
        let rules = Arc::new(Rules::with_delivery(crate::rules::Delivery::current(
            outbound.policy().clone(),
        )));
        // Push connections' and MQTT sinks' alert rules are made by the rules module
        // (outbound never imports it).
        let made_by = rules.clone();
        let build: Arc<outbound::alerting::Build> = Arc::new(move |store, specs, role| {
            made_by
                .conn_rules(store, specs, role)
                .map(|r| Arc::new(r) as Arc<dyn outbound::alerting::Alerting>)
                .map_err(|e| e.to_string())
        });
        outbound.set_alerting(build.clone());
        mqtt.sinks.set_alerting(build);
        stores.set_hooks(lifecycle_hooks(
            &outbound, &mqtt, &console, &metrics, &rules,
        ));
        AppState {
            throttle: Arc::new(Throttle::new(config.auth_limit)),
            stores,
            keys,
            metrics,
            shutdown: Arc::new(tokio::sync::watch::channel(false).0),
            outbound,
            mqtt,
            console,
            config,
            rules,
            rates: Arc::new(Rates::new()),
        }
    }
}

impl AppState {
    /// Refuses a store the data path's file system cannot hold before any
    /// file is made: 400 if it is larger than the whole file system (a size no
    /// disk here can take), 507 if larger than its free space now. (A store
    /// that still does not fit when its files are allocated is a 507 too, see
    /// [`ApiError`]'s conversion of `StorageFull`.)
    pub async fn check_space(&self, cfg: &store::Config) -> ApiResult<()> {
        let base = self.config.base_path.clone();
        let fs = tokio::task::spawn_blocking(move || nix::sys::statvfs::statvfs(&base))
            .await
            .map_err(ApiError::internal)?;
        // A file system that cannot say is left to the allocation.
        let Ok(fs) = fs else {
            return Ok(());
        };
        // The field types differ between targets (32 bits on 32-bit ARM), so
        // the widening is needed there and a no-op here.
        #[allow(clippy::useless_conversion)]
        let (unit, blocks, available) = (
            u64::from(fs.fragment_size()),
            u64::from(fs.blocks()),
            u64::from(fs.blocks_available()),
        );
        let (total, free) = (blocks.saturating_mul(unit), available.saturating_mul(unit));
        let need = cfg.footprint();
        if need > total {
            return Err(ApiError::bad_request(format!(
                "invalid store configuration: the store needs {need} bytes, more than the whole file system of the data path ({total} bytes)"
            )));
        }
        if need > free {
            return Err(ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                format!("not enough free space: the store needs {need} bytes, {free} are free"),
            ));
        }
        Ok(())
    }
}

/// What else happens when a store comes or goes, run by the registry for
/// every caller alike (REST, console).
fn lifecycle_hooks(
    outbound: &Arc<Outbound>,
    mqtt: &Arc<Mqtt>,
    console: &Arc<Console>,
    metrics: &Arc<Metrics>,
    rules: &Arc<Rules>,
) -> Hooks {
    // Weak: the outbound connections hold the registry.
    let outbound = Arc::downgrade(outbound);
    let mqtt = Arc::downgrade(mqtt);
    let (console, metrics) = (console.clone(), metrics.clone());
    let (opened_rules, deleted_rules) = (rules.clone(), rules.clone());
    Hooks {
        before_delete: Box::new(move |name| {
            let (outbound, mqtt) = (outbound.clone(), mqtt.clone());
            Box::pin(async move {
                if let Some(o) = outbound.upgrade() {
                    o.remove_store(&name).await;
                }
                if let Some(m) = mqtt.upgrade() {
                    m.remove_store(&name).await;
                }
            })
        }),
        deleted: Box::new(move |name| {
            console.sessions.remove_store(name);
            deleted_rules.remove(name);
        }),
        opened: Box::new(move |name, dir, store| opened_rules.attach(name, dir, store)),
        created: Box::new(move |_| metrics.store_created()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::{CreateError, Mode, Spec, FILE};

    fn spec() -> Spec {
        Spec {
            id: String::new(),
            mode: Mode::Push,
            url: "ws://peer.invalid/in".into(),
            from: 0,
            format: "full".into(),
            headers: Default::default(),
            filter: String::new(),
            filter_ignore_case: false,
            created_at: String::new(),
            last_timestamp: 0,
            ca_file: None,
            created_by: Default::default(),
            agg: Default::default(),
            rules: Vec::new(),
        }
    }

    /// Pins a race of the store lifecycle: a connection created with a
    /// store handle taken before the store was deleted and created again
    /// under its name (a request in flight across both) ran against the
    /// old store and was persisted into the new store's directory.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_for_a_deleted_store_is_refused_not_given_to_its_successor() {
        let dir = tempfile::tempdir().unwrap();
        let state = AppState::new(Config {
            base_path: dir.path().to_path_buf(),
            ..Config::default()
        });
        let small = store::Config {
            num_blocks: 8,
            ..store::Config::default()
        };
        let (old, _) = state.stores.create("s", small).await.unwrap();
        state.stores.delete("s").await.unwrap();
        state.stores.create("s", small).await.unwrap();
        let r = state.outbound.create("s", &old, spec()).await;
        assert!(matches!(r, Err(CreateError::Gone)), "{:?}", r.err());
        assert!(state.outbound.list("s").is_empty());
        assert!(!dir.path().join("s").join(FILE).exists());
        // The new store's own handle is taken.
        let new = state.stores.open("s").await.unwrap();
        let conn = state.outbound.create("s", &new, spec()).await.unwrap();
        assert_eq!(state.outbound.list("s").len(), 1);
        assert!(dir.path().join("s").join(FILE).exists());
        state.outbound.delete("s", conn.id()).await.unwrap();
        state.outbound.stop_all().await;
        state
            .stores
            .close_all(std::time::Duration::from_secs(1))
            .await;
    }
}
