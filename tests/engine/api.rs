//! The engine's public API on real files: lifecycle, bad input, deletes,
//! reset, data types, JSON helpers, durability policies and concurrency.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tsstore::store::sim::SimMedium;
use tsstore::store::{
    self, format, Config, DataType, Durability, Error, Field, FieldType, Filter, Media, Medium,
    Order, Query, Store,
};

fn small(blocks: u32, block: u32) -> Config {
    Config {
        num_blocks: blocks,
        data_block_size: block,
        index_block_size: 64,
        ..Config::default()
    }
}

fn payload(ts: i64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (ts as usize * 31 + i * 7) as u8).collect()
}

fn file_sizes(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    v.sort();
    v
}

fn sim_media(cfg: &Config) -> Media {
    Media {
        data: Arc::new(SimMedium::new(cfg.data_file_len().unwrap() as usize)),
        index: Arc::new(SimMedium::new(cfg.index_file_len() as usize)),
        meta: Arc::new(SimMedium::new(format::META_FILE_LEN as usize)),
    }
}

#[test]
fn store_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
    check::<Arc<Store>>();
    check::<Error>();
}

#[test]
fn create_open_close_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::create(dir.path(), "a", Config::default()).unwrap();
    let files = file_sizes(&dir.path().join("a"));
    let names: Vec<_> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["data.tsdb", "index.tsdb", "meta.tsdb"]);
    // The ring, then the commit area: three slots of 16 KiB.
    assert_eq!(files[0].1, 1024 * 4096 + 3 * 16 * 1024);
    assert_eq!(files[1].1, 32 * 1024);
    assert_eq!(files[2].1, 8192);
    assert!(matches!(
        Store::create(dir.path(), "a", Config::default()),
        Err(Error::AlreadyExists { .. })
    ));
    // A second open while the first holds the store is refused.
    let e = Store::open(dir.path(), "a").err().unwrap();
    assert!(e.to_string().contains("already open"), "{e}");
    s.insert(10, b"x").unwrap();
    s.close().unwrap();
    assert!(matches!(s.insert(11, b"y"), Err(Error::Closed)));
    assert!(matches!(s.stats(), Err(Error::Closed)));
    s.close().unwrap();
    drop(s);

    let s = Store::open(dir.path(), "a").unwrap();
    assert_eq!(s.get_by_time(10).unwrap().data, b"x");
    assert!(matches!(
        store::delete_store(dir.path(), "a"),
        Err(Error::InvalidConfig { .. })
    ));
    s.delete_store().unwrap();
    assert!(!dir.path().join("a").exists());
    assert!(matches!(
        Store::open(dir.path(), "a"),
        Err(Error::NotFound { .. })
    ));

    let s = Store::create(dir.path(), "b", Config::default()).unwrap();
    drop(s);
    store::delete_store(dir.path(), "b").unwrap();
    assert!(!dir.path().join("b").exists());
    assert!(matches!(
        store::delete_store(dir.path(), "b"),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn bad_names_and_configs_get_clear_errors_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "",
        "../x",
        "a/b",
        ".hidden",
        "a.b",
        "sp ace",
        &"n".repeat(65),
    ] {
        let e = Store::create(dir.path(), name, Config::default())
            .err()
            .unwrap();
        assert!(matches!(e, Error::InvalidName { .. }), "{name}: {e}");
    }
    for (cfg, field) in [
        (small(1024, 1000), "data_block_size"),
        (small(1024, 32), "data_block_size"),
        (
            Config {
                index_block_size: 48,
                ..Config::default()
            },
            "index_block_size",
        ),
        (small(0, 4096), "num_blocks"),
    ] {
        let e = Store::create(dir.path(), "c", cfg).err().unwrap();
        assert!(e.to_string().contains(field), "{e}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn timestamps_must_be_positive_and_increase_and_rejections_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::create(dir.path(), "t", small(8, 256)).unwrap();
    s.insert(100, b"a").unwrap();
    s.insert(200, b"b").unwrap();
    let before = (s.stats().unwrap(), s.io_stats());
    for ts in [0, -5] {
        assert!(matches!(
            s.insert(ts, b"z"),
            Err(Error::InvalidTimestamp { timestamp }) if timestamp == ts
        ));
    }
    // Checked against the newest object, not the first of the head block.
    for ts in [150, 200, 100, 1] {
        match s.insert(ts, b"z") {
            Err(Error::TimestampOutOfOrder { timestamp, newest }) => {
                assert_eq!((timestamp, newest), (ts, 200));
            }
            other => panic!("{ts}: {other:?}"),
        }
    }
    let too_big = vec![0u8; s.max_object_size() as usize + 1];
    assert!(matches!(
        s.insert(300, &too_big),
        Err(Error::ObjectTooLarge { .. })
    ));
    assert_eq!((s.stats().unwrap(), s.io_stats()), before);
    // The largest object fits, and takes the whole ring.
    let max = vec![9u8; s.max_object_size() as usize];
    let h = s.insert(300, &max).unwrap();
    assert_eq!(h.span_count, 8);
    assert_eq!(s.get(&h).unwrap(), max);
    assert_eq!(s.stats().unwrap().object_count, 1);
    // insert_now never goes backwards, even with timestamps in the future.
    s.insert(i64::MAX - 10, b"future").unwrap();
    let n = s.insert_now(b"now").unwrap();
    assert_eq!(n.timestamp, i64::MAX - 9);
}

#[test]
fn objects_pack_span_and_read_back_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::create(dir.path(), "p", small(16, 256)).unwrap();
    let sizes = [0usize, 1, 10, 200, 208, 209, 600, 1000, 3];
    let mut hs = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let ts = (i as i64 + 1) * 1000;
        hs.push((s.insert(ts, &payload(ts, n)).unwrap(), n));
    }
    // 208 = 256 - 32 - 16 is the largest packed object; 209 spans.
    assert_eq!(hs[4].0.span_count, 1);
    assert_eq!(hs[5].0.span_count, 2);
    assert_eq!(hs[7].0.span_count, 5);
    for (h, n) in &hs {
        assert_eq!(h.size as usize, *n);
        assert_eq!(s.get(h).unwrap(), payload(h.timestamp, *n));
    }
    drop(s);
    let s = Store::open(dir.path(), "p").unwrap();
    for (h, n) in &hs {
        assert_eq!(s.get(h).unwrap(), payload(h.timestamp, *n));
        let o = s.get_by_time(h.timestamp).unwrap();
        assert_eq!(o.handle, *h);
    }
    let all = s.objects(&Query::oldest(0)).unwrap();
    assert_eq!(all.len(), sizes.len());
    // Reopening never appends to the old head block.
    let h = s.insert(100_000, b"after").unwrap();
    assert_ne!(h.block_num, hs.last().unwrap().0.block_num);
}

#[test]
fn queries_limits_orders_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::create(dir.path(), "q", small(64, 512)).unwrap();
    for i in 1..=100i64 {
        let room = if i % 3 == 0 { "Lab" } else { "hall" };
        s.insert(i * 10, format!(r#"{{"i":{i},"room":"{room}"}}"#).as_bytes())
            .unwrap();
    }
    let ts = |v: Vec<store::ObjectHandle>| v.iter().map(|h| h.timestamp).collect::<Vec<_>>();
    assert_eq!(ts(s.oldest(3).unwrap()), [10, 20, 30]);
    assert_eq!(ts(s.newest(3).unwrap()), [1000, 990, 980]);
    assert_eq!(ts(s.range(95, 130, 0).unwrap()), [100, 110, 120, 130]);
    assert_eq!(ts(s.range(100, 130, 2).unwrap()), [100, 110]);
    assert_eq!(s.range(1001, 5000, 0).unwrap(), []);
    assert!(matches!(s.range(5, 1, 0), Err(Error::InvalidRange { .. })));
    let q = Query::range(100, 300, 0).order(Order::NewestFirst);
    assert_eq!(
        ts(s.handles(&q).unwrap()),
        (10..=30).rev().map(|i| i * 10).collect::<Vec<_>>()
    );
    // Filters scan until `limit` matches.
    let lab = s
        .objects(&Query::newest(5).filter(Filter::new("lab", true)))
        .unwrap();
    assert_eq!(
        lab.iter().map(|o| o.handle.timestamp).collect::<Vec<_>>(),
        [990, 960, 930, 900, 870]
    );
    assert!(s
        .objects(&Query::oldest(0).filter(Filter::new("lab", false)))
        .unwrap()
        .is_empty());
    // `since` counts from now: these timestamps are in 1970.
    assert!(s.since(Duration::from_secs(3600), 0).unwrap().is_empty());
    let now = store::now_ns();
    s.insert(now, b"{}").unwrap();
    assert_eq!(ts(s.since(Duration::from_secs(3600), 0).unwrap()), [now]);
    // Closest and exact block lookups.
    assert_eq!(
        s.find_block_by_time_exact(500).unwrap(),
        s.get_by_time(500).unwrap().handle.block_num
    );
    assert!(matches!(
        s.find_block_by_time_exact(505),
        Err(Error::TimestampNotFound { timestamp: 505 })
    ));
    assert_eq!(
        s.find_block_by_time(504).unwrap(),
        s.get_by_time(500).unwrap().handle.block_num
    );
    assert_eq!(
        s.find_block_by_time(507).unwrap(),
        s.get_by_time(510).unwrap().handle.block_num
    );
    let blocks = s.find_blocks_in_range(10, 1000).unwrap();
    assert!(blocks.len() > 1 && blocks.windows(2).all(|w| w[0] != w[1]));
    // A visitor can stop early.
    let mut seen = 0;
    s.visit(&Query::oldest(0), |_, _| {
        seen += 1;
        if seen == 7 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(seen, 7);
}

#[test]
fn soft_delete_hides_everywhere_keeps_bytes_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::create(dir.path(), "d", small(8, 256)).unwrap();
    let marker = b"find-me-on-disk-0123456789";
    let mut hs = Vec::new();
    for i in 1..=20i64 {
        let data = if i == 5 {
            marker.to_vec()
        } else {
            payload(i, 20)
        };
        hs.push(s.insert(i, &data).unwrap());
    }
    let big = s.insert(21, &payload(21, 500)).unwrap();
    s.insert(22, b"after").unwrap(); // keeps the span out of the head block
    s.delete(&hs[4]).unwrap(); // ts 5, sealed block
    s.delete_by_time(20).unwrap(); // sealed block too
    s.delete(&big).unwrap(); // a spanning object
    s.delete_by_time(22).unwrap(); // the head block
    for gone in [5, 20, 21, 22] {
        assert!(matches!(
            s.get_by_time(gone),
            Err(Error::TimestampNotFound { .. })
        ));
    }
    assert!(matches!(s.get(&hs[4]), Err(Error::ObjectNotFound)));
    assert!(matches!(s.delete(&hs[4]), Err(Error::ObjectNotFound)));
    assert!(matches!(
        s.delete_by_time(5),
        Err(Error::TimestampNotFound { .. })
    ));
    let check = |s: &Store| {
        let all: Vec<i64> = s.oldest(0).unwrap().iter().map(|h| h.timestamp).collect();
        assert_eq!(all, (1..=19).filter(|&t| t != 5).collect::<Vec<_>>());
        assert_eq!(s.stats().unwrap().object_count, 18);
        assert_eq!(s.stats().unwrap().newest_timestamp, 19);
        assert_eq!(s.newest(1).unwrap()[0].timestamp, 19);
    };
    check(&s);
    // New inserts must still be newer than the deleted newest object.
    assert!(matches!(
        s.insert(22, b"x"),
        Err(Error::TimestampOutOfOrder { .. })
    ));
    drop(s);
    let raw = std::fs::read(dir.path().join("d").join(store::DATA_FILE)).unwrap();
    assert!(
        raw.windows(marker.len()).any(|w| w == marker),
        "soft delete keeps the bytes"
    );
    let s = Store::open(dir.path(), "d").unwrap();
    check(&s);
}

#[test]
fn reset_is_one_small_write_and_keeps_config_and_schema() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        data_type: DataType::Schema,
        ..small(32, 512)
    };
    let s = Store::create(dir.path(), "r", cfg).unwrap();
    s.set_schema(vec![Field {
        index: 1,
        name: "temp".into(),
        ty: FieldType::Float64,
    }])
    .unwrap();
    for i in 1..=200i64 {
        s.put_json(1_000 + i, &serde_json::json!({ "temp": i as f64 / 2.0 }))
            .unwrap();
    }
    s.sync().unwrap();
    let io = s.io_stats();
    s.reset().unwrap();
    let written = s.io_stats().bytes_written - io.bytes_written;
    assert!(written <= 128, "reset wrote {written} bytes");
    let st = s.stats().unwrap();
    assert_eq!(
        (st.object_count, st.oldest_timestamp, st.newest_timestamp),
        (0, 0, 0)
    );
    assert!(s.oldest(0).unwrap().is_empty());
    // Older timestamps are accepted again after a reset.
    s.put_json(5, &serde_json::json!({ "temp": 1.5 })).unwrap();
    drop(s);
    let s = Store::open(dir.path(), "r").unwrap();
    assert_eq!(s.config().data_type, DataType::Schema);
    assert_eq!(s.config().num_blocks, 32);
    assert_eq!(s.schema().unwrap().fields.len(), 1);
    let all = s.oldest_json(0).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].1.get(), r#"{"temp":1.5}"#);
}

#[test]
fn data_types_validate_and_schema_stores_compact() {
    let dir = tempfile::tempdir().unwrap();
    let mk = |name: &str, t: DataType| {
        Store::create(
            dir.path(),
            name,
            Config {
                data_type: t,
                ..small(8, 256)
            },
        )
        .unwrap()
    };
    let text = mk("text", DataType::Text);
    assert!(matches!(
        text.encode_value(&[0xff, 0xfe]),
        Err(Error::InvalidData { .. })
    ));
    assert_eq!(
        text.encode_value("héllo".as_bytes()).unwrap(),
        "héllo".as_bytes()
    );
    let json = mk("json", DataType::Json);
    assert!(matches!(
        json.encode_value(b"{\"a\":"),
        Err(Error::InvalidData { .. })
    ));
    assert_eq!(json.encode_value(b"[1,2]").unwrap(), b"[1,2]");
    let bin = mk("bin", DataType::Binary);
    assert_eq!(bin.encode_value(&[0, 255]).unwrap(), [0, 255]);
    assert!(matches!(
        json.set_schema(vec![]),
        Err(Error::WrongDataType { .. })
    ));

    let sc = mk("sc", DataType::Schema);
    assert!(matches!(
        sc.encode_value(br#"{"a":1}"#),
        Err(Error::Schema(_))
    ));
    let fields = vec![
        Field {
            index: 1,
            name: "temperature".into(),
            ty: FieldType::Float32,
        },
        Field {
            index: 2,
            name: "sensor_id".into(),
            ty: FieldType::String,
        },
    ];
    sc.set_schema(fields.clone()).unwrap();
    let stored = sc
        .encode_value(br#"{"temperature": 72.5, "sensor_id": "room-1"}"#)
        .unwrap();
    assert_eq!(stored, br#"{"1":72.5,"2":"room-1"}"#);
    let h = sc.insert(1, &stored).unwrap();
    assert_eq!(sc.get(&h).unwrap(), stored);
    assert_eq!(
        sc.decode_value(&stored, false).unwrap(),
        br#"{"temperature":72.5,"sensor_id":"room-1"}"#
    );
    assert_eq!(sc.decode_value(&stored, true).unwrap(), stored);
    // Nested objects and wrong types are rejected; nothing is stored.
    assert!(sc.encode_value(br#"{"temperature": {"c": 1}}"#).is_err());
    assert!(sc.encode_value(br#"{"temperature": "hot"}"#).is_err());
    // Append-only evolution.
    let mut more = fields.clone();
    more.push(Field {
        index: 3,
        name: "cpu.pct".into(),
        ty: FieldType::Uint8,
    });
    assert_eq!(sc.set_schema(more).unwrap().version, 2);
    let mut changed = fields.clone();
    changed[0].ty = FieldType::Float64;
    assert!(matches!(sc.set_schema(changed), Err(Error::Schema(_))));
    assert!(matches!(
        sc.set_schema(fields[..1].to_vec()),
        Err(Error::Schema(_))
    ));
    drop(sc);
    let sc = Store::open(dir.path(), "sc").unwrap();
    assert_eq!(sc.schema().unwrap().version, 2);
    assert_eq!(
        sc.encode_compact_value(br#"{"3": 7}"#).unwrap(),
        br#"{"3":7}"#
    );
    assert!(sc.encode_compact_value(br#"{"3": 300}"#).is_err());
}

#[test]
fn json_helpers() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Reading {
        temperature: f64,
        sensor: String,
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Store::create(dir.path(), "j", small(8, 512)).unwrap();
    let r = Reading {
        temperature: 72.5,
        sensor: "living-room".into(),
    };
    let h = s.put_json(7, &r).unwrap();
    assert_eq!(s.get_json::<Reading>(&h).unwrap(), r);
    let (back, h2) = s.get_json_by_time::<Reading>(7).unwrap();
    assert_eq!((back, h2), (r, h));
    assert_eq!(
        s.get_json_raw(&h).unwrap().get(),
        r#"{"temperature":72.5,"sensor":"living-room"}"#
    );
    s.put_json_now(&serde_json::json!({"n": 1})).unwrap();
    let newest = s.newest_json(10).unwrap();
    assert_eq!(newest.len(), 2);
    assert_eq!(newest[0].1.get(), r#"{"n":1}"#);
    assert_eq!(s.range_json(1, 7, 0).unwrap().len(), 1);
    assert!(matches!(
        s.get_json_by_time::<Reading>(8),
        Err(Error::TimestampNotFound { .. })
    ));
    s.insert(i64::MAX - 1, b"not json").unwrap();
    assert!(matches!(
        s.get_json_raw_by_time(i64::MAX - 1),
        Err(Error::InvalidData { .. })
    ));
}

#[test]
fn many_independent_stores_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let stores: Vec<Store> = (0..5)
        .map(|i| Store::create(dir.path(), &format!("s{i}"), small(4, 128)).unwrap())
        .collect();
    for (i, s) in stores.iter().enumerate() {
        for t in 1..=(i as i64 + 1) {
            s.insert(t, &[i as u8]).unwrap();
        }
    }
    for (i, s) in stores.iter().enumerate() {
        let all = s.oldest_with_data(0).unwrap();
        assert_eq!(all.len(), i + 1);
        assert!(all.iter().all(|o| o.data == [i as u8]));
    }
    stores[2].reset().unwrap();
    assert_eq!(stores[1].stats().unwrap().object_count, 2);
    assert_eq!(stores[3].stats().unwrap().object_count, 4);
}

#[test]
fn readers_run_alongside_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(Store::create(dir.path(), "c", small(64, 1024)).unwrap());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let s = s.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !done.load(std::sync::atomic::Ordering::Acquire) || reads == 0 {
                    let objs = s.newest_with_data(50).unwrap();
                    assert!(objs
                        .windows(2)
                        .all(|w| w[0].handle.timestamp > w[1].handle.timestamp));
                    for o in &objs {
                        assert_eq!(o.data, payload(o.handle.timestamp, 40));
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for ts in 1..=20_000i64 {
        s.insert(ts, &payload(ts, 40)).unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
}

#[test]
fn concurrent_writers_with_insert_now_never_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        durability: Durability::Always,
        ..small(256, 4096)
    };
    let s = Arc::new(Store::create(dir.path(), "w", cfg).unwrap());
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| s.insert_now(format!("{t}-{i}").as_bytes()).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_by_key(|h| h.timestamp);
    assert!(all.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
    for h in &all {
        assert!(s.get_by_time(h.timestamp).is_ok());
    }
    let io = s.io_stats();
    // Group commit: never more syncs than inserts.
    assert!(io.syncs <= 400, "{io:?}");
}

#[test]
fn insert_batch_reports_each_item() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::create(dir.path(), "b", small(8, 256)).unwrap();
    let items: Vec<(Option<i64>, &[u8])> = vec![
        (Some(10), b"a"),
        (Some(5), b"late"),
        (None, b"now"),
        (Some(-1), b"neg"),
        (Some(i64::MAX - 5), b"far"),
    ];
    let r = s.insert_batch(items);
    assert!(r[0].is_ok() && r[2].is_ok() && r[4].is_ok());
    assert!(matches!(r[1], Err(Error::TimestampOutOfOrder { .. })));
    assert!(matches!(r[3], Err(Error::InvalidTimestamp { .. })));
    assert_eq!(s.stats().unwrap().object_count, 3);
}

#[test]
fn always_syncs_before_returning() {
    let cfg = Config {
        durability: Durability::Always,
        ..small(8, 256)
    };
    let media = sim_media(&cfg);
    let data = media.data.clone();
    let s = Store::create_on(media, cfg).unwrap();
    let before = data.stats().snapshot().syncs;
    s.insert(1, b"durable").unwrap();
    assert!(data.stats().snapshot().syncs > before);
}

#[test]
fn interval_makes_acknowledged_data_durable_within_the_interval() {
    let cfg = Config {
        durability: Durability::Interval(Duration::from_millis(50)),
        ..small(8, 256)
    };
    let data = SimMedium::new(cfg.data_file_len().unwrap() as usize);
    let media = Media {
        data: Arc::new(data.clone()),
        ..sim_media(&cfg)
    };
    let s = Store::create_on(media, cfg).unwrap();
    s.insert(1, b"needle-in-the-durable-image").unwrap();
    let t = Instant::now();
    let needle = b"needle-in-the-durable-image";
    while !data
        .durable_image()
        .windows(needle.len())
        .any(|w| w == needle)
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "never became durable"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Once clean, an idle store does not keep syncing (flash wear).
    std::thread::sleep(Duration::from_millis(120));
    let syncs = data.stats().snapshot().syncs;
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(data.stats().snapshot().syncs, syncs);
}

#[test]
fn never_does_not_sync_until_close() {
    // A ring these writes fill less than half of: a writer that reaches
    // the lease (half the ring under `never`) commits, see
    // `a_writer_lapping_a_tiny_ring_syncs_about_once_a_lease`.
    let cfg = Config {
        durability: Durability::Never,
        ..small(64, 256)
    };
    let media = sim_media(&cfg);
    let (data, index) = (media.data.clone(), media.index.clone());
    let s = Store::create_on(media, cfg).unwrap();
    let syncs = |m: &Arc<dyn Medium>| m.stats().snapshot().syncs;
    let (d0, i0) = (syncs(&data), syncs(&index));
    for t in 1..=100 {
        s.insert(t, b"0123456789").unwrap();
    }
    assert_eq!((syncs(&data), syncs(&index)), (d0, i0));
    s.close().unwrap();
    assert!(syncs(&data) > d0);
}

#[test]
fn open_rejects_damaged_files_with_corrupted() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::create(dir.path(), "m", small(8, 256)).unwrap());
    let meta = dir.path().join("m").join(store::META_FILE);
    std::fs::write(&meta, vec![0u8; 1024]).unwrap();
    assert!(matches!(
        Store::open(dir.path(), "m"),
        Err(Error::Corrupted { .. })
    ));
    drop(Store::create(dir.path(), "n", small(8, 256)).unwrap());
    let data = dir.path().join("n").join(store::DATA_FILE);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(100)
        .unwrap();
    let e = Store::open(dir.path(), "n").err().unwrap();
    assert!(matches!(e, Error::Corrupted { .. }), "{e}");
}

#[test]
fn a_clean_open_reads_the_index_and_not_every_block() {
    let cfg = small(4096, 128);
    let media = sim_media(&cfg);
    let s = Store::create_on(media.clone(), cfg).unwrap();
    for ts in 1..=40_000i64 {
        s.insert(ts, &payload(ts, 40)).unwrap();
    }
    let before = s.stats().unwrap();
    assert_eq!(before.active_blocks, 4096, "the ring wrapped");
    s.close().unwrap();
    drop(s);
    let reads = media.data.stats().snapshot().bytes_read;
    let s = Store::open_on(media.clone(), None).unwrap();
    let read = media.data.stats().snapshot().bytes_read - reads;
    // What the format lets a clean open read, whatever the ring: each of
    // the commit slots' header, frontier and aux images (how full they are
    // depends on when the interval's commits fell), the working image, the
    // frontier page twice (rescanned, and copied into the new commit) and
    // the newest block. Not 4096 block headers (131072 bytes).
    use tsstore::store::format::{COMMIT_SLOTS, PAGE, SLOT_FRONTIER_OFF};
    let bound = COMMIT_SLOTS * (SLOT_FRONTIER_OFF + 2 * PAGE) + 3 * PAGE + 128;
    assert!(bound < 4096 * 32, "the bound tells the two apart: {bound}");
    assert!(
        read <= bound as u64,
        "a clean open read {read} bytes of data"
    );
    let after = s.stats().unwrap();
    assert_eq!(
        (
            after.object_count,
            after.oldest_timestamp,
            after.newest_timestamp
        ),
        (
            before.object_count,
            before.oldest_timestamp,
            before.newest_timestamp
        )
    );
}

/// Regression: under a steady stream of writes, `interval` synced back to
/// back (thousands of fsyncs a second) instead of once an interval.
#[test]
fn interval_syncs_about_once_an_interval_under_steady_writes() {
    // The subject is the interval's cadence: a ring (and a pace) whose
    // writes stay well inside one lease (1 MiB, a quarter of this ring).
    // A writer that reaches the end of its lease commits at once, so a
    // writer lapping a tiny ring syncs once a lease, not once an interval
    // (see `a_writer_lapping_a_tiny_ring_syncs_about_once_a_lease`).
    let cfg = Config {
        durability: Durability::Interval(Duration::from_millis(100)),
        ..small(1024, 4096)
    };
    let media = sim_media(&cfg);
    let data = media.data.clone();
    let s = Store::create_on(media, cfg).unwrap();
    let before = data.stats().snapshot().syncs;
    let t = Instant::now();
    let mut ts = 0i64;
    while t.elapsed() < Duration::from_millis(600) {
        ts += 1;
        s.insert(ts, b"steady").unwrap();
        std::thread::sleep(Duration::from_micros(100));
    }
    let used = s.stats().unwrap().active_blocks;
    assert!(
        used < 128,
        "the writes filled {used} blocks: past half a lease"
    );
    let syncs = data.stats().snapshot().syncs - before;
    // 600 ms at one sync per 100 ms: about 6; never hundreds.
    assert!(syncs <= 15, "{syncs} data syncs in 600 ms");
    assert!(syncs >= 1, "no sync at all");
}

/// The price of a lease on every ring: a writer that laps a ring shorter
/// than four leases between commits (or any ring under `never`) reaches
/// the end of its lease and commits, with a data sync, once a lease (a
/// quarter of the ring; half under `never`), never once a block.
#[test]
fn a_writer_lapping_a_tiny_ring_syncs_about_once_a_lease() {
    // (Under `never` a lease of 64 blocks or more is not extended early by
    // the flusher: that would sync once a quarter lap.)
    for (durability, num_blocks, lease) in [
        (Durability::Interval(Duration::from_secs(3600)), 8, 2),
        (Durability::Never, 8, 4),
        (Durability::Never, 256, 128),
    ] {
        let cfg = Config {
            durability,
            ..small(num_blocks, 256)
        };
        let media = sim_media(&cfg);
        let data = media.data.clone();
        let s = Store::create_on(media, cfg).unwrap();
        let before = data.stats().snapshot().syncs;
        let mut blocks = 0u64;
        let mut last = None;
        for ts in 1..=4000i64 {
            let h = s.insert(ts, &payload(ts, 60)).unwrap();
            if last != Some(h.block_num) {
                blocks += 1;
                last = Some(h.block_num);
            }
        }
        let syncs = data.stats().snapshot().syncs - before;
        let want = blocks / lease;
        assert!(
            blocks > 6 * num_blocks as u64,
            "{durability:?}: {blocks} blocks: too few laps"
        );
        assert!(
            syncs + 2 >= want && syncs <= want + 2,
            "{durability:?}: {syncs} data syncs for {blocks} blocks, a lease of {lease}"
        );
    }
}

/// A server starting on a data path sweeps the leftovers of interrupted
/// creates while `tsstore create` (another process) may be creating a
/// store there: the sweep must never take a staging directory in use.
/// Without the retry of a taken directory, creates here failed with
/// "No such file or directory" within a few hundred rounds.
#[test]
fn a_create_survives_sweeps_running_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    std::fs::create_dir_all(&base).unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sweeper = {
        let (base, done) = (base.clone(), done.clone());
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                store::sweep(&base).unwrap();
                rounds += 1;
            }
            rounds
        })
    };
    for i in 0..300 {
        let name = format!("s{i}");
        let s = Store::create(&base, &name, small(4, 512))
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        drop(s);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(sweeper.join().unwrap() > 0);
    for i in 0..300 {
        assert!(
            base.join(format!("s{i}")).join("meta.tsdb").exists(),
            "s{i}"
        );
    }
}

/// The insert hook sees each acknowledged object once, with its stored
/// bytes, from every insert call, and never a rejected one (the alert
/// rules of the server hang on it).
#[test]
fn the_insert_hook_sees_each_acknowledged_object_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::create(dir.path(), "h", small(16, 4096)).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(i64, Vec<u8>)>::new()));
    let log = seen.clone();
    assert!(s.on_insert(move |t, d| log.lock().unwrap().push((t, d.to_vec()))));
    assert!(!s.on_insert(|_, _| {}));
    s.insert(10, b"a").unwrap();
    assert!(s.insert(5, b"late").is_err());
    let r = s.insert_batch([
        (Some(20), &b"b"[..]),
        (Some(15), &b"out of order"[..]),
        (Some(30), &b"c"[..]),
    ]);
    assert_eq!(r.iter().filter(|r| r.is_ok()).count(), 2);
    let now = s.insert_now(b"d").unwrap().timestamp;
    let got = seen.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![
            (10, b"a".to_vec()),
            (20, b"b".to_vec()),
            (30, b"c".to_vec()),
            (now, b"d".to_vec()),
        ]
    );
}
