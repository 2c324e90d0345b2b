//! tsstore: an embedded time-series store with a fixed storage footprint,
//! for Raspberry Pi and ARM gateways.
//!
//! # Layout
//! The modules form layers; a module imports only from layers below it
//! (`make test` checks that the top-level modules have no cycle and that
//! the areas never import each other: `tests/module_graph.py`; the map,
//! the data paths and where each kind of change goes are in
//! `docs/architecture.md`):
//! - the binary's face: [`cli`] and [`commands`] (the command line;
//!   [`probe`] its requests to a local server) and [`app`] (wiring of
//!   `tsstore serve`: listeners, the router assembled from each area's
//!   routes, TLS, ordered shutdown);
//! - the areas, siblings that never import each other: [`api`] (the REST
//!   API, axum), [`stream`] (the inbound WebSocket streams), [`ingest`]
//!   (the Unix-socket line protocol; its parser builds without the
//!   feature) and [`console`] (the web console: pages and embedded assets);
//! - what they share: [`state`] (`AppState` and the wiring of the store
//!   lifecycle's side effects), [`auth`] (store and admin keys, console
//!   cookies), [`outbound`] (outbound connections), [`codec`] (the wire
//!   codec and stream frames), [`follow`] (reading a store in order),
//!   [`error`] (the HTTP error), [`reject`] (why an insert was refused,
//!   typed), [`liveness`] (pings and the dead-peer deadline of every
//!   WebSocket), [`metrics`], [`throttle`] (failed authentications), [`session`]
//!   (console sessions and scopes), [`duration`], [`units`], [`shutdown`],
//!   [`config`] (layered configuration), [`notify`] (systemd readiness and
//!   watchdog), [`redact`] (secrets out of logged URLs); [`rules`] (store-level alert
//!   rules: the condition language, evaluation on insert, the alert ring);
//!   [`summary`] (every store's figures and the insert-rate history);
//! - below them: [`registry`] (the one owner of the stores' lifecycle),
//!   [`keys`] (store API keys), [`clock`];
//! - at the bottom, [`store`]: the storage engine (synchronous, no async
//!   runtime): a ring of fixed-size blocks on disk, an on-disk time index,
//!   power-loss safe recovery. Builds with `--no-default-features`.

pub mod ingest;
pub mod store;

#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod app;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod clock;
#[cfg(feature = "server")]
pub mod codec;
#[cfg(feature = "server")]
pub mod commands;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod console;
#[cfg(feature = "server")]
pub mod duration;
#[cfg(feature = "server")]
pub mod error;
#[cfg(feature = "server")]
pub mod follow;
#[cfg(feature = "server")]
pub mod keys;
#[cfg(feature = "server")]
pub mod liveness;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod notify;
#[cfg(feature = "server")]
pub mod outbound;
#[cfg(feature = "server")]
pub mod probe;
#[cfg(feature = "server")]
pub mod redact;
#[cfg(feature = "server")]
pub mod registry;
#[cfg(feature = "server")]
pub mod reject;
#[cfg(feature = "server")]
pub mod rules;
#[cfg(feature = "server")]
pub mod session;
#[cfg(feature = "server")]
pub mod shutdown;
#[cfg(feature = "server")]
pub mod state;
#[cfg(feature = "server")]
pub mod stream;
#[cfg(feature = "server")]
pub mod summary;
#[cfg(feature = "server")]
pub mod throttle;
#[cfg(feature = "server")]
pub mod units;

/// The README's library example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
