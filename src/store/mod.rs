//! The storage engine: a fixed-footprint circular store of timestamped
//! objects, synchronous and free of any async runtime.
//!
//! A store is a directory holding `data.tsdb` (a ring of fixed-size data
//! blocks), `index.tsdb` (one entry per block), `meta.tsdb` (shape and
//! reset point) and, for schema stores, `schema.json`. Every file is
//! allocated in full when the store is created and never grows. When the
//! ring is full, the oldest block is reclaimed for the newest data.
//!
//! ```
//! use tsstore::store::{Config, Store, Query, Filter};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::create(dir.path(), "sensors", Config::default())?;
//! store.insert(1_700_000_000_000_000_000, br#"{"temp":21.5,"room":"lab"}"#)?;
//! store.insert(1_700_000_001_000_000_000, br#"{"temp":21.7,"room":"hall"}"#)?;
//!
//! let newest = store.newest_with_data(10)?;
//! assert_eq!(newest[0].data, br#"{"temp":21.7,"room":"hall"}"#);
//!
//! let lab = store.objects(&Query::oldest(10).filter(Filter::new("LAB", true)))?;
//! assert_eq!(lab.len(), 1);
//! store.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod commit;
mod config;
mod engine;
mod error;
pub mod format;
mod frontier;
pub mod fs;
mod index;
mod json;
mod lifecycle;
pub mod medium;
mod object;
mod read;
mod recovery;
mod recovery_v1;
mod ring;
pub mod schema;
mod shared;
pub mod sim;
pub mod simfs;
mod staged;
mod write;

pub use config::{Config, DataType, Durability, DEFAULT_SYNC_INTERVAL_MS};
pub use engine::{Progress, Stats, Store};
pub use error::{Error, Result};
pub use lifecycle::{exists, validate_name};
pub use medium::{FileMedium, IoSnapshot, Medium};
pub use object::{now_ns, since_start, Filter, Object, ObjectHandle, Order, Query};
pub use schema::{Field, FieldType, Schema, SchemaError};
pub use shared::{Clock, Media, DATA_FILE, INDEX_FILE, META_FILE};
pub use staged::{delete_store, delete_store_with, sweep};

#[doc = include_str!("FORMAT.md")]
pub mod format_spec {}
