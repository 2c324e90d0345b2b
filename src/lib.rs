//! tsstore: an embedded time-series store with a fixed storage footprint,
//! for Raspberry Pi and ARM gateways.
//!
//! # Layout
//! - [`store`]: the storage engine (synchronous, no async runtime): a ring
//!   of fixed-size blocks on disk, an on-disk time index, power-loss safe
//!   recovery. Builds with `--no-default-features`.
//! - Behind the `server` feature (default): [`config`] (layered
//!   configuration), [`cli`] and [`commands`] (the command line; [`probe`]
//!   its requests to a local server), [`keys`]
//!   (store API keys), [`registry`] (the stores' lifecycle), [`api`] (the REST API,
//!   axum), [`console`] (the web console: pages and embedded assets),
//!   [`stream`] (WebSocket streams and outbound connections), [`ingest`]
//!   (the Unix-socket line protocol; its parser builds without the
//!   feature), [`notify`] (systemd readiness and watchdog), [`reject`]
//!   (why an insert was refused, typed, for every edge), [`redact`]
//!   (secrets out of logged URLs) and [`app`] (wiring, TLS, ordered
//!   shutdown).

pub mod ingest;
pub mod store;

#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod app;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod clock;
#[cfg(feature = "server")]
pub mod commands;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod console;
#[cfg(feature = "server")]
pub mod keys;
#[cfg(feature = "server")]
pub mod notify;
#[cfg(feature = "server")]
pub mod probe;
#[cfg(feature = "server")]
pub mod redact;
#[cfg(feature = "server")]
pub mod registry;
#[cfg(feature = "server")]
pub mod reject;
#[cfg(feature = "server")]
pub mod stream;

/// The README's library example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
