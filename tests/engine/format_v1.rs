//! Stores of earlier formats open. Format version 1, built byte by byte
//! from its tables (FORMAT.md, "Version changes"; not with the engine's
//! encoders), opens from its directory, reads back and is upgraded to
//! version 2, also after an upgrade cut short; and a store file written by
//! version 2, committed to the repository, keeps opening.

use std::path::Path;

use tsstore::store::format::{META_FILE_LEN, META_V1_FILE_LEN};
use tsstore::store::{Config, DataType, Durability, Query, Store};

const BLOCK: usize = 256;
const BLOCKS: usize = 4;
const INDEX_BLOCK: usize = 64;

fn le32(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

fn le64(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

fn crc(b: &[u8]) -> u32 {
    crc32c::crc32c(b)
}

/// A meta slot (FORMAT.md, "meta.tsdb").
fn meta_slot(generation: u64, base_seq: u64, session: u32, session_start: u64) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(b"TSSTMETA");
    m.extend_from_slice(&le32(1)); // format version
    m.push(3); // data type: schema
    m.push(0); // durability: always
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&le32(BLOCKS as u32));
    m.extend_from_slice(&le32(BLOCK as u32));
    m.extend_from_slice(&le32(INDEX_BLOCK as u32));
    m.extend_from_slice(&le32(1000));
    m.extend_from_slice(&le64(generation));
    m.extend_from_slice(&le64(base_seq));
    m.extend_from_slice(&le32(session));
    m.extend_from_slice(&le64(session_start));
    m.extend_from_slice(&le64(1_700_000_000_000_000_000));
    assert_eq!(m.len(), 68);
    let c = crc(&m);
    m.extend_from_slice(&le32(c));
    m
}

/// A block header (FORMAT.md, "Block header").
fn block_header(kind: u8, span: u32, seq: u64, first_ts: i64, session: u32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(b"TBLK");
    h.push(kind);
    h.extend_from_slice(&le32(span)[..3]);
    h.extend_from_slice(&le64(seq));
    h.extend_from_slice(&le64(first_ts as u64));
    h.extend_from_slice(&le32(session));
    let c = crc(&h);
    h.extend_from_slice(&le32(c));
    assert_eq!(h.len(), 32);
    h
}

/// A record (FORMAT.md, "Records").
fn record(seq: u64, ts: i64, data: &[u8], deleted: bool) -> Vec<u8> {
    let mut covered = Vec::new();
    covered.extend_from_slice(&le64(seq));
    covered.extend_from_slice(&le64(ts as u64));
    covered.extend_from_slice(&le32(data.len() as u32));
    covered.extend_from_slice(data);
    let mut r = Vec::new();
    r.extend_from_slice(&le64(ts as u64));
    let len = data.len() as u32 | if deleted { 1 << 31 } else { 0 };
    r.extend_from_slice(&le32(len));
    r.extend_from_slice(&le32(crc(&covered)));
    r.extend_from_slice(data);
    r
}

/// An index entry (FORMAT.md, "index.tsdb").
fn index_entry(seq: u64, first_ts: i64, synced_seq: u64, live: u32, kind: u8) -> Vec<u8> {
    let mut e = Vec::new();
    e.extend_from_slice(&le64(seq));
    e.extend_from_slice(&le64(first_ts as u64));
    e.extend_from_slice(&le32((seq - synced_seq) as u32));
    e.extend_from_slice(&le32(live | (kind as u32) << 24));
    e.extend_from_slice(&le32(0));
    let c = crc(&e);
    e.extend_from_slice(&le32(c));
    assert_eq!(e.len(), 32);
    e
}

fn put(img: &mut [u8], off: usize, bytes: &[u8]) {
    img[off..off + bytes.len()].copy_from_slice(bytes);
}

/// Block 0 (seq 1): two packed objects, the second soft-deleted; blocks 1
/// to 3 (seq 2..4): one object spanning them. Session 1 wrote them all.
fn images() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut meta = vec![0u8; 1024];
    // Generation 2 lives in slot 0; slot 1 holds an older generation.
    put(&mut meta, 0, &meta_slot(2, 1, 1, 1));
    put(&mut meta, 512, &meta_slot(1, 1, 0, 1));

    let mut data = vec![0u8; BLOCK * BLOCKS];
    let mut b0 = block_header(1, 0, 1, 100, 1);
    b0.extend(record(1, 100, br#"{"1":21.5}"#, false));
    b0.extend(record(1, 200, br#"{"1":22.0}"#, true));
    put(&mut data, 0, &b0);

    let big: Vec<u8> = (0..600u32).map(|i| b'a' + (i % 26) as u8).collect();
    let payload = BLOCK - 32;
    let mut s1 = block_header(2, 3, 2, 300, 1);
    let rec = record(2, 300, &big, false);
    // The span start holds the record header and the first bytes...
    s1.extend_from_slice(&rec[..payload]);
    put(&mut data, BLOCK, &s1);
    // ...each continuation block the next `payload` bytes after its header.
    let mut rest = &rec[payload..];
    for i in 1..3u32 {
        let mut c = block_header(3, i, 2 + i as u64, 300, 1);
        let n = rest.len().min(payload);
        c.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        put(&mut data, BLOCK * (1 + i as usize), &c);
    }
    assert!(rest.is_empty());

    // Two entries per 64-byte index block; synced through seq 4.
    let mut index = vec![0u8; 2 * INDEX_BLOCK];
    put(&mut index, 0, &index_entry(1, 100, 1, 1, 1));
    put(&mut index, 32, &index_entry(2, 300, 2, 1, 2));
    put(&mut index, 64, &index_entry(3, 300, 3, 0, 3));
    put(&mut index, 96, &index_entry(4, 300, 4, 0, 3));
    (meta, index, data)
}

/// Writes the three files of a version 1 store into `base/name`.
fn write_store(base: &Path, name: &str, (meta, index, data): &(Vec<u8>, Vec<u8>, Vec<u8>)) {
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("meta.tsdb"), meta).unwrap();
    std::fs::write(dir.join("index.tsdb"), index).unwrap();
    std::fs::write(dir.join("data.tsdb"), data).unwrap();
}

fn file_len(base: &Path, name: &str, file: &str) -> u64 {
    std::fs::metadata(base.join(name).join(file)).unwrap().len()
}

#[test]
fn a_store_written_from_the_spec_opens_reads_back_and_is_upgraded() {
    let tmp = tempfile::tempdir().unwrap();
    write_store(tmp.path(), "v1", &images());
    let s = Store::open(tmp.path(), "v1").unwrap();
    let cfg = s.config();
    assert_eq!(
        (cfg.num_blocks, cfg.data_block_size, cfg.index_block_size),
        (BLOCKS as u32, BLOCK as u32, INDEX_BLOCK as u32)
    );
    assert_eq!(cfg.data_type, DataType::Schema);
    assert_eq!(cfg.durability, Durability::Always);
    // Upgraded: version 2 sizes.
    assert_eq!(file_len(tmp.path(), "v1", "meta.tsdb"), META_FILE_LEN);
    assert_eq!(
        Some(file_len(tmp.path(), "v1", "data.tsdb")),
        cfg.data_file_len()
    );
    let all = s.objects(&Query::oldest(0)).unwrap();
    let ts: Vec<i64> = all.iter().map(|o| o.handle.timestamp).collect();
    assert_eq!(ts, [100, 300], "the deleted object stays hidden");
    assert_eq!(all[0].data, br#"{"1":21.5}"#);
    assert_eq!(all[1].handle.span_count, 3);
    assert_eq!(all[1].data.len(), 600);
    assert_eq!(all[1].data[..3], *b"abc");
    let st = s.stats().unwrap();
    assert_eq!((st.object_count, st.active_blocks), (2, 4));
    // The ring is full: the next object reclaims block 0 and keeps order.
    assert!(s.insert(250, b"x").is_err(), "older than the newest object");
    s.insert(400, b"{}").unwrap();
    assert_eq!(s.oldest(0).unwrap()[0].timestamp, 300);
    s.close().unwrap();
    drop(s);
    let s = Store::open(tmp.path(), "v1").unwrap();
    let ts: Vec<i64> = s.oldest(0).unwrap().iter().map(|h| h.timestamp).collect();
    assert_eq!(ts, [300, 400]);
}

/// The upgrade extends the data file before it replaces meta: a cut in
/// between leaves version 1 meta with the longer data file, which opens
/// (and is upgraded then). Extended with garbage in the new part too: the
/// upgrade writes its own commit there.
#[test]
fn an_upgrade_cut_after_extending_the_data_file_opens() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, fill) in [("zeros", 0u8), ("garbage", 0xA5)] {
        let (meta, index, mut data) = images();
        let cfg = Config {
            num_blocks: BLOCKS as u32,
            data_block_size: BLOCK as u32,
            index_block_size: INDEX_BLOCK as u32,
            ..Config::default()
        };
        data.resize(cfg.data_file_len().unwrap() as usize, fill);
        write_store(tmp.path(), name, &(meta, index, data));
        assert_eq!(file_len(tmp.path(), name, "meta.tsdb"), META_V1_FILE_LEN);
        let s = Store::open(tmp.path(), name).unwrap();
        let ts: Vec<i64> = s.oldest(0).unwrap().iter().map(|h| h.timestamp).collect();
        assert_eq!(ts, [100, 300], "{name}");
        assert_eq!(file_len(tmp.path(), name, "meta.tsdb"), META_FILE_LEN);
    }
}

#[test]
fn a_config_for_the_same_shape_creates_the_same_sizes() {
    let cfg = Config {
        num_blocks: BLOCKS as u32,
        data_block_size: BLOCK as u32,
        index_block_size: INDEX_BLOCK as u32,
        ..Config::default()
    };
    let (meta, index, data) = images();
    assert_eq!(cfg.ring_len(), Some(data.len() as u64));
    assert_eq!(cfg.index_file_len(), index.len() as u64);
    assert_eq!(META_V1_FILE_LEN, meta.len() as u64);
}

// ------------------------------------------------ a committed version 2 store

/// A small store written by the version 2 engine, committed under
/// `tests/engine/fixtures/v2-small/` (STYLE.md: a store file of each
/// released format keeps opening). Rewrite it only when the format is
/// meant to change, with `TSSTORE_WRITE_FIXTURE=1 cargo test --test tests
/// engine::format_v1::write_the_v2_fixture -- --ignored`.
const FIXTURE: &str = "tests/engine/fixtures/v2-small";

fn fixture_span() -> Vec<u8> {
    (0..600u32).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
#[ignore = "writes the committed fixture"]
fn write_the_v2_fixture() {
    if std::env::var_os("TSSTORE_WRITE_FIXTURE").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = Config {
        num_blocks: 8,
        data_block_size: 256,
        index_block_size: 64,
        data_type: DataType::Binary,
        durability: Durability::Always,
    };
    let s = Store::create(tmp.path(), "v2", cfg).unwrap();
    s.insert(1_000, b"alpha").unwrap();
    s.insert(2_000, b"beta").unwrap();
    s.insert(3_000, &fixture_span()).unwrap();
    s.insert(4_000, b"gamma").unwrap();
    s.delete_by_time(2_000).unwrap();
    s.close().unwrap();
    let dst = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["meta.tsdb", "index.tsdb", "data.tsdb"] {
        std::fs::copy(tmp.path().join("v2").join(f), dst.join(f)).unwrap();
    }
}

#[test]
fn the_committed_v2_store_opens_and_reads_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v2");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["meta.tsdb", "index.tsdb", "data.tsdb"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let s = Store::open(tmp.path(), "v2").unwrap();
    let cfg = s.config();
    assert_eq!(
        (cfg.num_blocks, cfg.data_block_size, cfg.index_block_size),
        (8, 256, 64)
    );
    let all = s.objects(&Query::oldest(0)).unwrap();
    let got: Vec<(i64, &[u8])> = all
        .iter()
        .map(|o| (o.handle.timestamp, o.data.as_slice()))
        .collect();
    let span = fixture_span();
    assert_eq!(
        got,
        [
            (1_000, &b"alpha"[..]),
            (3_000, span.as_slice()),
            (4_000, &b"gamma"[..])
        ],
        "the deleted object stays hidden"
    );
    assert_eq!(s.stats().unwrap().object_count, 3);
    // It takes writes and keeps them across a reopen.
    s.insert(5_000, b"delta").unwrap();
    s.close().unwrap();
    drop(s);
    let s = Store::open(tmp.path(), "v2").unwrap();
    assert_eq!(s.newest_with_data(1).unwrap()[0].data, b"delta");
}
