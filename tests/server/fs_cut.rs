//! Power cuts between the file-system calls of a store's creation with its
//! first key (the one path of `POST /api/stores` and `tsstore create`), of a
//! key file change, and a server started on a data path holding the
//! leftovers such cuts leave (FORMAT.md, "File-system operations and power
//! cuts").
//!
//! The cut tests cut after every call `k` under each loss model (see
//! `tests/engine/fs_cut.rs`); a failure names the cut and the calls that ran.

use std::cell::RefCell;
use std::path::Path;

use serde_json::json;
use tsstore::keys::{self, KeyCache, KeyFile, NewKey};
use tsstore::registry;
use tsstore::store::fs::Fs;
use tsstore::store::simfs::{for_every_cut, Cut};
use tsstore::store::{self, Config, Store};

use super::common::Server;

const TORN_SEEDS: u64 = 4;

fn small() -> Config {
    Config {
        num_blocks: 8,
        ..Config::default()
    }
}

fn listed(base: &Path, cut: &Cut) -> bool {
    store::sweep(base).unwrap_or_else(|e| panic!("sweep: {e}\n{cut}"));
    let mut found = false;
    for e in std::fs::read_dir(base).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(store::exists(base, &name), "{name} is not a store\n{cut}");
        found |= name == "s";
    }
    found
}

#[test]
fn a_store_and_its_first_key_appear_together_or_not_at_all_at_every_cut() {
    let scratch = tempfile::tempdir().unwrap();
    let made: RefCell<Option<NewKey>> = RefCell::new(None);
    let cuts = for_every_cut(
        scratch.path(),
        TORN_SEEDS,
        &|_| {},
        &|fs: &dyn Fs, base| {
            let r = registry::create_store(fs, base, "s", small());
            *made.borrow_mut() = r.ok().map(|(_, k)| k);
        },
        &|base, cut| {
            let made = made.borrow();
            if !listed(base, cut) {
                assert!(
                    made.is_none(),
                    "the create returned Ok but the store is gone\n{cut}"
                );
                let (s, _) = registry::create_store(&store::fs::RealFs, base, "s", small())
                    .unwrap_or_else(|e| panic!("s cannot be created again: {e}\n{cut}"));
                s.close().unwrap();
                return;
            }
            Store::open(base, "s").unwrap_or_else(|e| panic!("open: {e}\n{cut}"));
            let dir = base.join("s");
            let file = keys::load(&dir, "s").unwrap_or_else(|e| panic!("keys: {e}\n{cut}"));
            assert_eq!(file.keys.len(), 1, "{cut}");
            if let Some(k) = made.as_ref() {
                KeyCache::new()
                    .check("s", &dir, &k.api_key)
                    .unwrap_or_else(|_| panic!("the first key is refused\n{cut}"));
            }
        },
    )
    .unwrap();
    println!("create with key: {cuts} cuts");
}

#[test]
fn a_key_change_leaves_the_old_or_the_new_key_file_at_every_cut() {
    let scratch = tempfile::tempdir().unwrap();
    let made = tempfile::tempdir().unwrap();
    keys::init(made.path(), "s", "first").unwrap();
    let old = keys::load(made.path(), "s").unwrap();
    keys::add(made.path(), "s", "second").unwrap();
    let new: KeyFile = keys::load(made.path(), "s").unwrap();
    let ok = std::cell::Cell::new(false);
    let cuts = for_every_cut(
        scratch.path(),
        TORN_SEEDS,
        &|dir| keys::save(dir, &old).unwrap(),
        &|fs: &dyn Fs, dir| ok.set(keys::save_with(fs, dir, &new).is_ok()),
        &|dir, cut| {
            let got = keys::load(dir, "s").unwrap_or_else(|e| panic!("keys: {e}\n{cut}"));
            if ok.get() {
                assert_eq!(got, new, "{cut}");
            } else {
                assert!(got == old || got == new, "{got:?}\n{cut}");
            }
        },
    )
    .unwrap();
    println!("key change: {cuts} cuts");
}

#[test]
fn a_server_removes_leftovers_at_start_and_never_lists_them() {
    let data = tempfile::tempdir().unwrap();
    let stage = data.path().join(".staging-s-00000000000000ff");
    let gone = data.path().join(".deleting-t-00000000000000ff");
    for d in [&stage, &gone] {
        std::fs::create_dir(d).unwrap();
        std::fs::write(d.join("meta.tsdb"), b"").unwrap();
    }
    let server = Server::builder().data_dir(data.path()).start();
    // The sweep runs before the stores are listed and opened, in the
    // background of the start, and logs once it has removed them: wait for
    // the line, boundedly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !server.log().contains("removed leftovers") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        server.log().contains("removed leftovers"),
        "{}",
        server.log()
    );
    assert!(!stage.exists() && !gone.exists());
    let stores = server.get("/api/stores").admin().send();
    assert_eq!(stores.status, 200, "{}", stores.text());
    assert!(!stores.text().contains("staging") && !stores.text().contains("deleting"));
    // The leftover's name can be created.
    server.create_store("s", json!({}));
}
