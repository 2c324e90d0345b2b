//! Test-only hook standing in for a slow medium: it holds a store's disk
//! work (open, create, reset, delete) for as long as a file says so, the
//! way an SD card recovering a large store holds it for minutes. The
//! server tests use it to prove that nothing else waits meanwhile, by
//! ordering rather than by timing: the work has provably started, and
//! provably not finished, until the test lets it go.
//!
//! Compiled only with debug assertions or the `test-hooks` feature, never
//! into a release build, and inert unless `TSSTORE_TEST_HOLD_DIR` is set.
//! With `TSSTORE_TEST_HOLD_DIR=D`, the `<op>` work of store `<name>` (`op`
//! one of `open`, `create`, `reset`, `delete`) first looks for the file
//! `D/<op>-<name>`. If it is there, the hook creates `D/<op>-<name>.held`
//! and waits until `D/<op>-<name>` is removed, then removes the `.held`
//! file and lets the work go on. It runs on the operation's own thread, at
//! the point where the disk work starts.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use super::Phase;

/// The environment variable naming the directory of hold files.
pub const HOLD_DIR_VAR: &str = "TSSTORE_TEST_HOLD_DIR";

fn dir() -> Option<&'static PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::var_os(HOLD_DIR_VAR).filter(|v| !v.is_empty())?;
        tracing::warn!("{HOLD_DIR_VAR} is set: store operations can be held (a test hook)");
        Some(PathBuf::from(d))
    })
    .as_ref()
}

/// Waits while the hold file of `phase` on store `name` exists.
pub(super) fn hold(phase: Phase, name: &str) {
    let Some(dir) = dir() else {
        return;
    };
    let gate = dir.join(format!("{}-{name}", phase.as_str()));
    if !gate.exists() {
        return;
    }
    let held = dir.join(format!("{}-{name}.held", phase.as_str()));
    tracing::warn!(
        store = name,
        operation = phase.as_str(),
        "held by a test hook"
    );
    if let Err(e) = std::fs::write(&held, b"") {
        tracing::error!(error = %e, "test hook: cannot write {}", held.display());
    }
    while gate.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = std::fs::remove_file(&held);
    tracing::warn!(
        store = name,
        operation = phase.as_str(),
        "released by a test hook"
    );
}
