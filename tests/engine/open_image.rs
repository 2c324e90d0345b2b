//! Opening arbitrary bytes as a store, and exercising whatever opens: the
//! no-panic property shared by the proptests in `model.rs` and the
//! cargo-fuzz target `fuzz/fuzz_targets/open_store.rs`, which includes this
//! file by path (so it uses nothing but `std` and `tsstore`).
//!
//! The property, by [`Level`]: `Store::open_on` never panics and fails only
//! with `Error::Corrupted`; a store that opens can be scanned, queried,
//! deleted from, written to and closed without a panic or an unexpected
//! error, and opens again. Unless checksums were forged or meta was damaged
//! (`Consistent`), reads also agree with each other (ranges, orders, point
//! reads and the full scan), and an object inserted (or deleted) and closed
//! stays so after the reopen. Images a power cut can leave (`CrashModel`,
//! FORMAT.md "What survives a power cut") also have stats that agree with a
//! scan.
//!
//! Fuzz input layout; the first byte modulo 3 picks the mode:
//! - 0, raw: the next 1024 bytes are the meta image, then a little-endian
//!   `u16` length and that many index bytes; the rest is data. Almost
//!   always rejected: exercises the length and meta validation.
//! - 1, forged: a valid meta for a small shape (see [`shape`]) built from
//!   header fields in the input, then the index and data images (cut or
//!   zero-padded to their exact sizes), optionally with every checksum
//!   recomputed so that the fuzzer gets past them into recovery's logic.
//! - 2, scripted: a valid store built on simulated media by a script of
//!   operations, its final (or crash) images, then byte mutations.

use std::sync::Arc;
use std::time::Duration;

use tsstore::store::format::{
    crc, get_u32, get_u64, record_crc, Meta, RecordKey, BLOCK_CRC_OFF, BLOCK_HEADER_LEN,
    BLOCK_KIND_OFF, BLOCK_MAGIC, BLOCK_MAGIC_V1, BLOCK_SEQ_OFF, BLOCK_SESSION_OFF, FORMAT_VERSION,
    FORMAT_VERSION_V1, IDX_CRC_OFF, IDX_SEQ_OFF, INDEX_ENTRY_LEN, META_FILE_LEN, META_SLOT_LEN,
    META_SLOT_STRIDE, RECORD_HEADER_LEN, REC_CRC_OFF, REC_LEN_OFF, REC_TS_OFF,
};
use tsstore::store::sim::{Rng, SimMedium};
use tsstore::store::{Config, DataType, Durability, Error, Media, Object, Order, Query, Store};

/// The byte images of a store's three files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    pub meta: Vec<u8>,
    pub index: Vec<u8>,
    pub data: Vec<u8>,
}

impl Images {
    /// Fresh simulated media holding these images.
    pub fn media(&self) -> Media {
        sims_to_media(&[
            SimMedium::from_image(self.meta.clone()),
            SimMedium::from_image(self.index.clone()),
            SimMedium::from_image(self.data.clone()),
        ])
    }

    /// What reads of the three media see now.
    pub fn live(sims: &[SimMedium; 3]) -> Images {
        Images {
            meta: sims[0].live_image(),
            index: sims[1].live_image(),
            data: sims[2].live_image(),
        }
    }

    /// The images a power cut would leave now (see `SimMedium::crash_image`).
    pub fn crash(sims: &[SimMedium; 3], rng: &mut Rng) -> Images {
        Images {
            meta: sims[0].crash_image(rng),
            index: sims[1].crash_image(rng),
            data: sims[2].crash_image(rng),
        }
    }

    /// File `i`: 0 meta, 1 index, 2 data.
    pub fn file_mut(&mut self, i: usize) -> &mut Vec<u8> {
        match i % 3 {
            0 => &mut self.meta,
            1 => &mut self.index,
            _ => &mut self.data,
        }
    }
}

/// Meta, index and data media as a [`Media`].
pub fn sims_to_media(s: &[SimMedium; 3]) -> Media {
    Media {
        meta: Arc::new(s[0].clone()),
        index: Arc::new(s[1].clone()),
        data: Arc::new(s[2].clone()),
    }
}

/// Zero-filled simulated media sized for `cfg`: meta, index, data.
pub fn new_sims(cfg: &Config) -> [SimMedium; 3] {
    [
        SimMedium::new(META_FILE_LEN as usize),
        SimMedium::new(cfg.index_file_len() as usize),
        SimMedium::new(cfg.data_file_len().expect("valid config") as usize),
    ]
}

/// A small store shape from two input bytes: 2 to 17 blocks of 64 to 512
/// bytes, 64- or 128-byte index blocks, any data type and durability.
pub fn shape(x: u8, y: u8) -> Config {
    Config {
        num_blocks: 2 + (x & 15) as u32,
        data_block_size: 64 << ((x >> 4) & 3),
        index_block_size: 64 << ((x >> 6) & 1),
        data_type: [
            DataType::Binary,
            DataType::Text,
            DataType::Json,
            DataType::Schema,
        ][(y & 3) as usize],
        durability: match (y >> 2) % 3 {
            0 => Durability::Never,
            1 => Durability::Always,
            _ => Durability::Interval(Duration::from_secs(1)),
        },
    }
}

/// `bytes` cut or zero-padded to `len`.
fn sized(bytes: &[u8], len: usize) -> Vec<u8> {
    let mut v = bytes[..bytes.len().min(len)].to_vec();
    v.resize(len, 0);
    v
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (a, b) = input.split_at(n.min(input.len()));
    *input = b;
    a
}

fn take_u64(input: &mut &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let b = take(input, 8);
    a[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(a)
}

/// How much [`open_and_exercise`] may expect of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Forged checksums or damaged meta: no panic, only `Corrupted`.
    Survive,
    /// Damaged data or index (outside the medium assumptions of FORMAT.md):
    /// also consistent reads, and a clean close keeps what it acknowledged.
    Consistent,
    /// What a power cut can leave: also stats that agree with a scan.
    CrashModel,
}

/// Decodes a fuzz input (layout in the module docs) and says what may be
/// expected of the images.
pub fn images_from_input(input: &[u8]) -> (Images, Level) {
    let mut rest = input;
    let mode = take(&mut rest, 1).first().copied().unwrap_or(0) % 3;
    match mode {
        0 => {
            let meta = take(&mut rest, META_FILE_LEN as usize).to_vec();
            let l = take(&mut rest, 2);
            let l = u16::from_le_bytes([
                l.first().copied().unwrap_or(0),
                l.get(1).copied().unwrap_or(0),
            ]);
            let index = take(&mut rest, l as usize).to_vec();
            (
                Images {
                    meta,
                    index,
                    data: rest.to_vec(),
                },
                Level::Consistent,
            )
        }
        1 => {
            let hdr = take(&mut rest, 3);
            let (x, y, flags) = (
                hdr.first().copied().unwrap_or(0),
                hdr.get(1).copied().unwrap_or(0),
                hdr.get(2).copied().unwrap_or(0),
            );
            let cfg = shape(x, y);
            let generation = take_u64(&mut rest);
            let base_seq = take_u64(&mut rest);
            let session = take_u64(&mut rest) as u32;
            let session_start = take_u64(&mut rest);
            let (durability, interval) = match cfg.durability {
                Durability::Always => (0, 1000),
                Durability::Interval(d) => (1, d.as_millis() as u32),
                Durability::Never => (2, 1000),
            };
            let meta = Meta {
                version: FORMAT_VERSION,
                floor_seq: 0,
                data_type: y & 3,
                durability,
                num_blocks: cfg.num_blocks,
                data_block_size: cfg.data_block_size,
                index_block_size: cfg.index_block_size,
                sync_interval_ms: interval,
                generation,
                base_seq,
                session,
                session_start,
                created_ns: 1,
                clean: false,
            };
            let mut meta_img = vec![0u8; META_FILE_LEN as usize];
            let at = Meta::slot_offset(generation) as usize;
            meta_img[at..at + META_SLOT_LEN].copy_from_slice(&meta.encode());
            if flags & 2 != 0 {
                // The other slot: raw bytes from the input.
                let other = (at + META_SLOT_STRIDE) % (2 * META_SLOT_STRIDE);
                let raw = take(&mut rest, META_SLOT_LEN);
                meta_img[other..other + raw.len()].copy_from_slice(raw);
            }
            let index_len = cfg.index_file_len() as usize;
            let mut index = sized(take(&mut rest, index_len), index_len);
            let data_len = cfg.data_file_len().unwrap_or(0) as usize;
            let mut data = sized(rest, data_len);
            let forged = flags & 1 != 0;
            if forged {
                forge_checksums(&cfg, &mut index, &mut data);
            }
            (
                Images {
                    meta: meta_img,
                    index,
                    data,
                },
                if forged {
                    Level::Survive
                } else {
                    Level::Consistent
                },
            )
        }
        _ => {
            let hdr = take(&mut rest, 3);
            let (x, y, len) = (
                hdr.first().copied().unwrap_or(0),
                hdr.get(1).copied().unwrap_or(0),
                hdr.get(2).copied().unwrap_or(0),
            );
            let script = take(&mut rest, (len & 0x7f) as usize);
            let mut img = build_scripted(shape(x, y), script, len & 0x80 != 0);
            let mut level = Level::CrashModel;
            for m in rest.chunks(4) {
                level = level.min(match mutate(&mut img, m) {
                    0 => Level::Survive,
                    _ => Level::Consistent,
                });
            }
            (img, level)
        }
    }
}

/// Encodes a valid store's images as a mode-1 fuzz input (no forging): the
/// seeds of the fuzz corpus. `None` if the store's shape is not one that
/// [`shape`] can express.
pub fn input_of_images(img: &Images) -> Option<Vec<u8>> {
    let m = Meta::decode(&img.meta[..META_SLOT_LEN])
        .ok()
        .into_iter()
        .chain(Meta::decode(&img.meta[META_SLOT_STRIDE..META_SLOT_STRIDE + META_SLOT_LEN]).ok())
        .max_by_key(|m| m.generation)?;
    let x = (m.num_blocks.checked_sub(2)? as u8)
        | ((m.data_block_size / 64).trailing_zeros() as u8) << 4
        | ((m.index_block_size / 64).trailing_zeros() as u8) << 6;
    let y = m.data_type | ([1u8, 2, 0][m.durability as usize % 3] << 2);
    if shape(x, y).num_blocks != m.num_blocks
        || shape(x, y).data_block_size != m.data_block_size
        || shape(x, y).index_block_size != m.index_block_size
    {
        return None;
    }
    let mut out = vec![1, x, y, 0];
    for v in [m.generation, m.base_seq, m.session as u64, m.session_start] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&img.index);
    out.extend_from_slice(&img.data);
    Some(out)
}

/// Recomputes the checksum of every index entry with a sequence number, of
/// every block header with the block magic, and of the records of packed
/// and span-start blocks, so that arbitrary contents validate.
fn forge_checksums(cfg: &Config, index: &mut [u8], data: &mut [u8]) {
    for e in index.chunks_exact_mut(INDEX_ENTRY_LEN) {
        if get_u64(e, IDX_SEQ_OFF) != 0 {
            let c = crc(&e[..IDX_CRC_OFF]);
            e[IDX_CRC_OFF..IDX_CRC_OFF + 4].copy_from_slice(&c.to_le_bytes());
        }
    }
    let b = cfg.data_block_size as usize;
    let n = cfg.num_blocks as usize;
    let payload = b - BLOCK_HEADER_LEN;
    for pos in 0..n {
        let blk = &mut data[pos * b..(pos + 1) * b];
        let version = match get_u32(blk, 0) {
            BLOCK_MAGIC => FORMAT_VERSION,
            BLOCK_MAGIC_V1 => FORMAT_VERSION_V1,
            _ => continue,
        };
        let c = crc(&blk[..BLOCK_CRC_OFF]);
        blk[BLOCK_CRC_OFF..BLOCK_CRC_OFF + 4].copy_from_slice(&c.to_le_bytes());
        let key = RecordKey {
            version,
            seq: get_u64(blk, BLOCK_SEQ_OFF),
            session: get_u32(blk, BLOCK_SESSION_OFF),
        };
        match blk[BLOCK_KIND_OFF] {
            1 => {
                let mut off = BLOCK_HEADER_LEN;
                while off + RECORD_HEADER_LEN <= b {
                    let ts = get_u64(blk, off + REC_TS_OFF) as i64;
                    let len = get_u32(blk, off + REC_LEN_OFF) & !(1 << 31);
                    let end = off + RECORD_HEADER_LEN + len as usize;
                    if len as usize > b || end > b {
                        break;
                    }
                    let c = record_crc(key, ts, len, &blk[off + RECORD_HEADER_LEN..end]);
                    blk[off + REC_CRC_OFF..off + REC_CRC_OFF + 4].copy_from_slice(&c.to_le_bytes());
                    off = end;
                }
            }
            2 => {
                let at = BLOCK_HEADER_LEN;
                let ts = get_u64(blk, at + REC_TS_OFF) as i64;
                let len = (get_u32(blk, at + REC_LEN_OFF) & !(1 << 31)) as usize;
                let k = (RECORD_HEADER_LEN + len).div_ceil(payload);
                if k > n {
                    continue;
                }
                let mut obj = Vec::with_capacity(len);
                let first = (payload - RECORD_HEADER_LEN).min(len);
                let d0 = pos * b + at + RECORD_HEADER_LEN;
                obj.extend_from_slice(&data[d0..d0 + first]);
                for i in 1..k {
                    let p = (pos + i) % n;
                    let m = payload.min(len - obj.len());
                    let d = p * b + BLOCK_HEADER_LEN;
                    obj.extend_from_slice(&data[d..d + m]);
                }
                let c = record_crc(key, ts, len as u32, &obj);
                let o = pos * b + at + REC_CRC_OFF;
                data[o..o + 4].copy_from_slice(&c.to_le_bytes());
            }
            _ => {}
        }
    }
}

/// Applies one 4-byte mutation `[op, off_lo, off_hi, val]` to the images;
/// returns the file it changed (0 meta, 1 index, 2 data).
pub fn mutate(img: &mut Images, m: &[u8]) -> usize {
    let [op, lo, hi, val] = [0, 1, 2, 3].map(|i| m.get(i).copied().unwrap_or(0));
    let file = (op >> 2) as usize % 3;
    let f = img.file_mut(file);
    if f.is_empty() {
        return file;
    }
    let off = u16::from_le_bytes([lo, hi]) as usize % f.len();
    match op & 3 {
        0 => f[off] ^= val.max(1),
        1 => f[off] = val,
        2 => {
            let end = (off + val as usize + 1).min(f.len());
            f[off..end].fill(0);
        }
        _ => {
            // Zero the tail, as a file cut short and padded again.
            if val & 1 == 1 {
                f[off..].fill(0);
            }
        }
    }
    file
}

/// Builds a store on simulated media by a script: each byte is one
/// operation (low 3 bits) with an argument (high 5 bits). Returns the
/// images after a close, or those a power cut at the end would leave.
pub fn build_scripted(cfg: Config, script: &[u8], crash: bool) -> Images {
    let sims = new_sims(&cfg);
    let mut store = Store::create_on(sims_to_media(&sims), cfg).expect("create on sim media");
    let payload = cfg.data_block_size as u64 - BLOCK_HEADER_LEN as u64;
    let max = store.max_object_size();
    let mut ts = 1_000i64;
    let mut rng = Rng::new(script.len() as u64);
    for &c in script {
        let arg = (c >> 3) as u64;
        let len = match c & 7 {
            0 | 1 => Some(arg),
            2 => Some(arg * payload / 32),
            3 => Some((payload + arg * payload / 4).min(max)),
            4 => Some(max.saturating_sub(arg)),
            _ => None,
        };
        match (c & 7, len) {
            (_, Some(len)) => {
                ts += 1 + arg as i64;
                let data: Vec<u8> = (0..len).map(|i| b'a' + ((i as u8 ^ c) % 26)).collect();
                store.insert(ts, &data).expect("scripted insert");
            }
            (5, _) => {
                let live = store.newest(0).expect("scan");
                if let Some(h) = live.get(arg as usize % live.len().max(1)) {
                    store.delete(h).expect("scripted delete");
                }
            }
            (6, _) if arg == 0 => store.reset().expect("scripted reset"),
            _ => {
                store.close().expect("close");
                drop(store);
                store = Store::open_on(sims_to_media(&sims), None).expect("scripted reopen");
            }
        }
    }
    if crash {
        // Taken before the close below, which writes only to the media.
        return Images::crash(&sims, &mut rng);
    }
    store.close().expect("close");
    Images::live(&sims)
}

/// What happened to an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Open failed with `Error::Corrupted`.
    Rejected,
    /// The store opened with this many live objects.
    Opened { objects: usize },
}

fn scan(store: &Store) -> Vec<Object> {
    store
        .objects(&Query::oldest(0))
        .expect("full scan of an open store")
}

/// Range queries, in both orders and with limits, and point reads agree
/// with the full scan, whatever the store went through (no model needed).
fn ranges_agree_with_scan(store: &Store, all: &[Object]) {
    let step = (all.len() / 6).max(1);
    let mut bounds = vec![i64::MIN, 0, i64::MAX];
    for o in all.iter().step_by(step).chain(all.last()) {
        let t = o.handle.timestamp;
        bounds.extend([t.saturating_sub(1), t, t.saturating_add(1)]);
        let got = store
            .get_by_time(t)
            .expect("get_by_time of a scanned object");
        assert_eq!(got, *o, "get_by_time disagrees with the scan");
    }
    for &a in &bounds {
        for &b in bounds.iter().filter(|&&b| b >= a).step_by(3) {
            let want: Vec<&Object> = all
                .iter()
                .filter(|o| a <= o.handle.timestamp && o.handle.timestamp <= b)
                .collect();
            let up = store.objects(&Query::range(a, b, 0)).expect("range");
            assert!(up.iter().eq(want.iter().copied()), "range {a}..={b}");
            let down = Query::range(a, b, 2).order(Order::NewestFirst);
            let down = store.objects(&down).expect("newest-first range");
            assert!(
                down.iter().eq(want.iter().rev().take(2).copied()),
                "newest-first range {a}..={b} limit 2"
            );
        }
    }
}

/// Opens `img` on fresh simulated media and exercises the store; panics if
/// the property in the module docs does not hold.
pub fn open_and_exercise(img: &Images, level: Level) -> Outcome {
    let strict = level >= Level::Consistent;
    let media = img.media();
    let store = match Store::open_on(media.clone(), None) {
        Ok(s) => s,
        Err(Error::Corrupted { .. }) => return Outcome::Rejected,
        Err(e) => panic!("open failed with {e:?}; only Error::Corrupted is allowed"),
    };
    let all = scan(&store);
    let count = all.len();
    let newest = store.objects(&Query::newest(0)).expect("newest-first scan");
    assert!(
        newest.iter().rev().eq(all.iter()),
        "newest-first scan is not the oldest-first scan reversed"
    );
    // Handles alone do not read spanning objects whole: they may list one
    // with damaged contents that the scans above drop. So may stats.
    let handles = store.oldest(0).expect("oldest handles");
    let stats = store.stats().expect("stats");
    assert_eq!(
        stats.oldest_timestamp,
        handles.first().map_or(0, |h| h.timestamp)
    );
    assert_eq!(
        stats.newest_timestamp,
        handles.last().map_or(0, |h| h.timestamp)
    );
    assert!(stats.active_blocks <= stats.num_blocks);
    if level == Level::CrashModel {
        assert_eq!(
            stats.object_count, count as u64,
            "stats disagree with a scan"
        );
        assert_eq!(handles.len(), count, "handles disagree with a scan");
    }
    if strict {
        for w in all.windows(2) {
            assert!(
                w[0].handle.timestamp < w[1].handle.timestamp,
                "scan out of order: {:?} then {:?}",
                w[0].handle,
                w[1].handle
            );
        }
        ranges_agree_with_scan(&store, &all);
    }
    // Point reads of a few objects: first, middle, last, and a gap.
    let picks: Vec<&Object> = [0, count / 2, count.wrapping_sub(1)]
        .iter()
        .filter_map(|&i| all.get(i))
        .collect();
    for o in &picks {
        let by_time = store.get_by_time(o.handle.timestamp);
        let by_handle = store.get(&o.handle);
        if strict {
            let got = by_time.expect("get_by_time of a scanned object");
            assert_eq!(got.data, o.data, "get_by_time disagrees with the scan");
            assert_eq!(by_handle.expect("get of a scanned handle"), o.data);
        }
        let _ = store.get_by_time(o.handle.timestamp.wrapping_add(1));
        let _ = store.find_block_by_time(o.handle.timestamp);
        let _ = store.find_blocks_in_range(o.handle.timestamp, i64::MAX);
    }
    for t in [i64::MIN, -1, 0, 1, i64::MAX] {
        let _ = store.get_by_time(t);
        let _ = store.range(t, i64::MAX, 3);
    }
    // Delete the middle object.
    let deleted = all.get(count / 2).map(|o| o.handle);
    if let Some(h) = deleted {
        match store.delete_by_time(h.timestamp) {
            Ok(()) => {
                assert!(
                    store.get_by_time(h.timestamp).is_err(),
                    "deleted object still readable"
                );
            }
            Err(e) if strict => panic!("delete of a scanned object failed: {e:?}"),
            Err(_) => {}
        }
    }
    // One insert, past whatever the store holds.
    let payload = b"{\"fuzz\":1}";
    let inserted = match store.insert_now(payload) {
        Ok(h) => {
            assert_eq!(store.get(&h).expect("read back the insert"), payload);
            Some(h)
        }
        // Nothing is later than the newest timestamp i64::MAX.
        Err(Error::TimestampOutOfOrder {
            newest: i64::MAX, ..
        }) => None,
        Err(e) => panic!("insert into an opened store failed: {e:?}"),
    };
    let _ = store.insert(1, b"x");
    store.close().expect("close");
    drop(store);

    let again = match Store::open_on(media, None) {
        Ok(s) => s,
        Err(e) => panic!("reopen of a store that opened and closed cleanly failed: {e:?}"),
    };
    let after = scan(&again);
    if strict {
        if let Some(h) = inserted {
            let got = again
                .get_by_time(h.timestamp)
                .expect("the insert survives a clean close");
            assert_eq!(got.data, payload);
            assert_eq!(after.last().map(|o| o.handle.timestamp), Some(h.timestamp));
        }
        if let Some(d) = deleted {
            assert!(
                after.iter().all(|o| o.handle.timestamp != d.timestamp),
                "a delete did not survive a clean close"
            );
        }
    }
    let stats = again.stats().expect("stats after reopen");
    if level == Level::CrashModel {
        assert_eq!(
            stats.object_count,
            after.len() as u64,
            "stats disagree with a scan"
        );
    }
    again.close().expect("close after reopen");
    Outcome::Opened { objects: count }
}
