//! Power cuts between the file-system calls of create, delete and a schema
//! write (FORMAT.md, "File-system operations and power cuts").
//!
//! Each test runs its operation on a [`SimFs`] cut after every call `k`
//! (every one, not a sample) under each loss model: nothing lost, every
//! unsynced change lost, and [`TORN_SEEDS`] seeded torn ones (any subset of
//! unsynced writes and directory changes). After the cut the base is opened
//! the way the server starts (leftovers swept, stores listed, each opened)
//! and checked:
//! - create: store `s` is absent and can be created again, or present, a
//!   version 2 store as create writes it (8 KiB meta, the first commit in
//!   its slot: both written through the seam) before it is opened, and
//!   opens with the schema written before it appeared; a create that
//!   returned `Ok` is present; nothing but stores is left in the base;
//! - delete: `s` is whole (opens, every object there) or gone and creatable;
//!   a delete that returned `Ok` is gone;
//! - schema: the old schema or the new one, never a torn or missing file;
//!   the new one if the save returned `Ok`.
//!
//! A failure names the cut and the calls that ran.

use std::cell::Cell;
use std::path::Path;

use tsstore::store::format::{self, CommittedHeader, Meta};
use tsstore::store::fs::Fs;
use tsstore::store::schema::{self, Field, FieldType, Schema};
use tsstore::store::simfs::{for_every_cut, Cut};
use tsstore::store::{self, Config, DataType, Store};

/// Torn seeds per cut; each cut also runs "nothing lost" and "unsynced lost".
const TORN_SEEDS: u64 = 8;

fn small(data_type: DataType) -> Config {
    Config {
        num_blocks: 8,
        data_type,
        ..Config::default()
    }
}

fn field(index: u32, name: &str) -> Field {
    Field {
        index,
        name: name.into(),
        ty: FieldType::Float64,
    }
}

fn v1() -> Schema {
    Schema::new(vec![field(1, "t")]).unwrap()
}

fn v2() -> Schema {
    v1().evolve(vec![field(1, "t"), field(2, "h")]).unwrap()
}

/// Runs [`for_every_cut`] in a scratch directory and prints the count.
fn every_cut(
    setup: &dyn Fn(&Path),
    op: &dyn Fn(&dyn Fs, &Path),
    check: &dyn Fn(&Path, &Cut),
    what: &str,
) {
    let scratch = tempfile::tempdir().unwrap();
    let cuts = for_every_cut(scratch.path(), TORN_SEEDS, setup, op, check).unwrap();
    println!("{what}: {cuts} cuts");
}

/// What the server does at start: leftovers swept, then every entry that is
/// a store listed. Checks that nothing else is left in the base.
fn start(base: &Path, cut: &Cut) -> Vec<String> {
    store::sweep(base).unwrap_or_else(|e| panic!("sweep: {e}\n{cut}"));
    let mut stores = Vec::new();
    for e in std::fs::read_dir(base).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(
            store::exists(base, &name),
            "{name} is left in the base and is not a store\n{cut}"
        );
        stores.push(name);
    }
    stores.sort();
    stores
}

/// `s` is absent: a create of it succeeds.
fn creatable(base: &Path, cut: &Cut) {
    Store::create(base, "s", small(DataType::Json))
        .unwrap_or_else(|e| panic!("s cannot be created again: {e}\n{cut}"))
        .close()
        .unwrap();
}

/// The files of store `dir`, created with `cfg` and not opened since, are
/// those of a new version 2 store: its meta record and its first commit.
fn assert_first_image(dir: &Path, cfg: &Config, cut: &Cut) {
    let meta = std::fs::read(dir.join(store::META_FILE)).unwrap();
    assert_eq!(meta.len() as u64, format::META_FILE_LEN, "{cut}");
    let at = Meta::slot_offset(1) as usize;
    let m = Meta::decode(&meta[at..]).unwrap_or_else(|e| panic!("meta: {e}\n{cut}"));
    assert_eq!(
        (m.version, m.generation),
        (format::FORMAT_VERSION, 1),
        "{cut}"
    );
    let data = std::fs::read(dir.join(store::DATA_FILE)).unwrap();
    assert_eq!(Some(data.len() as u64), cfg.data_file_len(), "{cut}");
    let ring_len = cfg.ring_len().unwrap();
    let at = format::slot_offset(ring_len, format::slot_of(1)) as usize;
    let c = CommittedHeader::decode(&data[at..at + format::SLOT_STRIDE])
        .unwrap_or_else(|| panic!("no first commit in data.tsdb\n{cut}"));
    assert!(c.counter == 1 && c.self_contained, "{c:?}\n{cut}");
}

#[test]
fn create_leaves_no_store_or_a_whole_one_at_every_cut() {
    let ok = Cell::new(false);
    every_cut(
        &|base| {
            // Another store beside it, which no cut may touch.
            let o = Store::create(base, "other", small(DataType::Json)).unwrap();
            o.insert(1, b"{\"a\":1}").unwrap();
            o.close().unwrap();
        },
        &|fs: &dyn Fs, base| {
            let made = Store::create_with(fs, base, "s", small(DataType::Schema), |fs, dir| {
                schema::save_with(fs, dir, &v1()).map_err(store::Error::from)
            });
            ok.set(made.is_ok());
        },
        &|base, cut| {
            let stores = start(base, cut);
            let other = Store::open(base, "other").unwrap_or_else(|e| panic!("other: {e}\n{cut}"));
            assert_eq!(other.oldest_with_data(10).unwrap().len(), 1, "{cut}");
            drop(other);
            if stores.contains(&"s".to_string()) {
                assert_first_image(&base.join("s"), &small(DataType::Schema), cut);
                let s = Store::open(base, "s").unwrap_or_else(|e| panic!("open: {e}\n{cut}"));
                assert_eq!(s.schema(), Some(v1()), "{cut}");
                s.insert(1, b"{\"t\":1.5}")
                    .unwrap_or_else(|e| panic!("insert: {e}\n{cut}"));
            } else {
                assert!(
                    !ok.get(),
                    "the create returned Ok but the store is gone\n{cut}"
                );
                creatable(base, cut);
            }
        },
        "create",
    );
}

#[test]
fn delete_leaves_the_store_whole_or_gone_at_every_cut() {
    let ok = Cell::new(false);
    every_cut(
        &|base| {
            let s = Store::create(base, "s", small(DataType::Json)).unwrap();
            for ts in 1..=20 {
                s.insert(ts, format!("{{\"n\":{ts}}}").as_bytes()).unwrap();
            }
            s.close().unwrap();
        },
        &|fs: &dyn Fs, base| ok.set(store::delete_store_with(fs, base, "s").is_ok()),
        &|base, cut| {
            let stores = start(base, cut);
            if stores.contains(&"s".to_string()) {
                assert!(
                    !ok.get(),
                    "the delete returned Ok but the store is there\n{cut}"
                );
                let s = Store::open(base, "s").unwrap_or_else(|e| panic!("open: {e}\n{cut}"));
                assert_eq!(s.oldest_with_data(100).unwrap().len(), 20, "{cut}");
            } else {
                creatable(base, cut);
            }
        },
        "delete",
    );
}

#[test]
fn a_schema_write_leaves_the_old_or_the_new_schema_at_every_cut() {
    let ok = Cell::new(false);
    every_cut(
        &|dir| schema::save(dir, &v1()).unwrap(),
        &|fs: &dyn Fs, dir| ok.set(schema::save_with(fs, dir, &v2()).is_ok()),
        &|dir, cut| {
            let got = schema::load(dir).unwrap_or_else(|e| panic!("load: {e}\n{cut}"));
            let got = got.unwrap_or_else(|| panic!("schema.json is missing\n{cut}"));
            if ok.get() {
                assert_eq!(got, v2(), "{cut}");
            } else {
                assert!(got == v1() || got == v2(), "{got:?}\n{cut}");
            }
        },
        "schema",
    );
}

#[test]
fn a_leftover_of_a_create_is_swept_and_never_listed() {
    let base = tempfile::tempdir().unwrap();
    let stage = base.path().join(".staging-s-00000000000000ff");
    std::fs::create_dir(&stage).unwrap();
    std::fs::write(stage.join("meta.tsdb"), b"").unwrap();
    let gone = base.path().join(".deleting-t-00000000000000ff");
    std::fs::create_dir(&gone).unwrap();
    std::fs::write(gone.join("data.tsdb"), b"").unwrap();
    assert!(!store::exists(base.path(), ".staging-s-00000000000000ff"));
    // The next create of the same name removes its own leftovers only.
    Store::create(base.path(), "s", small(DataType::Json))
        .unwrap()
        .close()
        .unwrap();
    assert!(!stage.exists());
    assert!(gone.exists());
    assert_eq!(store::sweep(base.path()).unwrap(), 1);
    assert!(!gone.exists());
}
