//! tsstore: an embedded time-series store with a fixed storage footprint,
//! for Raspberry Pi and ARM gateways.
//!
//! # Layout
//! - [`store`]: the storage engine (synchronous, no async runtime): a ring
//!   of fixed-size blocks on disk, an on-disk time index, power-loss safe
//!   recovery. Builds with `--no-default-features`.
//! - The server (REST, WebSocket, Unix socket, console) sits behind the
//!   `server` feature (default) and is built on the engine.

pub mod store;

/// The README's library example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
