//! The rules half of `cargo bench --bench agg`: the extra cost per insert
//! of evaluating a store's alert rules, measured in one run against the
//! same inserts into a store without rules.
//!
//! Two json stores (durability `never`: the figure is the CPU cost, not the
//! disk's), both with the rules hook installed as the server installs it;
//! one has 10 rules (of every operator, two nested fields, an `AND` and an
//! `OR`; one rule fires, its cooldown of an hour keeps it to one alert),
//! the other none. Rounds of 20,000 inserts of the same typical object
//! alternate between the two stores; the figure is the median over rounds
//! of the difference in nanoseconds per insert. For scale it also prints
//! the evaluation alone (no insert around it) and a full `serde_json::Value`
//! parse of the object, which the bench profile builds like the shipped
//! binary (`opt-level = "s"`). Nothing here asserts on time; the figure goes
//! into the `bench-agg: ` line as `rules_ns_per_insert`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use tsstore::rules::{Rule, Rules, Spec};
use tsstore::store::{Config, DataType, Durability, Store};

const ROUNDS: usize = 15;
const PER_ROUND: i64 = 20_000;

const OBJECT: &str = r#"{"temp":21.5,"humidity":40,"room":"lab","ok":true,"site":{"zone":"north","rack":7},"tags":["a","b"]}"#;

const RULES: [&str; 10] = [
    "temp > 30",
    "temp < -10",
    "humidity >= 95",
    "humidity <= 5",
    "room == \"cellar\"",
    "room != \"lab\"",
    "tags contains \"alarm\"",
    "site.zone == \"south\" AND site.rack > 3",
    "ok == false OR temp > 50",
    // Fires on every object; its cooldown keeps it to one alert.
    "site.rack == 7",
];

fn store(dir: &std::path::Path, name: &str, rules: &Rules) -> Arc<Store> {
    let cfg = Config {
        num_blocks: 4096,
        data_type: DataType::Json,
        durability: Durability::Never,
        ..Config::default()
    };
    let s = Arc::new(Store::create(dir, name, cfg).expect("create store"));
    rules.attach(name, &dir.join(name), &s);
    s
}

/// Nanoseconds per insert of one round into `s` from timestamp `from`.
fn round(s: &Store, from: i64) -> f64 {
    let start = Instant::now();
    for t in from..from + PER_ROUND {
        black_box(s.insert(t, OBJECT.as_bytes()).expect("insert"));
    }
    start.elapsed().as_nanos() as f64 / PER_ROUND as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the measurement, prints its section, and returns the extra
/// nanoseconds per insert (the median over rounds).
pub fn measure() -> f64 {
    std::fs::create_dir_all("target").expect("target dir");
    let dir = tempfile::Builder::new()
        .prefix("rules-bench-")
        .tempdir_in("target")
        .expect("temp dir");
    let rules = Rules::new();
    let plain = store(dir.path(), "plain", &rules);
    let ruled = store(dir.path(), "ruled", &rules);
    let set = rules.get("ruled").expect("attached");
    for (i, c) in RULES.iter().enumerate() {
        let spec = Spec {
            name: format!("r{i}"),
            condition: c.to_string(),
            cooldown: Some("1h".into()),
            ..Spec::default()
        };
        set.add(Rule::new(spec).expect("rule parses"))
            .expect("rule added");
    }
    // Warm-up round on each, not counted.
    round(&plain, 1);
    round(&ruled, 1);
    let (mut base, mut with, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..ROUNDS as i64 {
        let from = (r + 1) * PER_ROUND + 1;
        let b = round(&plain, from);
        let w = round(&ruled, from);
        base.push(b);
        with.push(w);
        diff.push(w - b);
    }
    // The evaluation alone, without the insert around it (less noisy on a
    // loaded machine): 10 rules on the same object.
    let n = 200_000;
    let start = Instant::now();
    for t in 0..n {
        set.evaluate(&ruled, t, black_box(OBJECT.as_bytes()));
    }
    let eval_ns = start.elapsed().as_nanos() as f64 / n as f64;
    // For scale: parsing the whole object into a serde_json::Value.
    let start = Instant::now();
    for _ in 0..n {
        black_box(serde_json::from_slice::<serde_json::Value>(black_box(OBJECT.as_bytes())).ok());
    }
    let parse_ns = start.elapsed().as_nanos() as f64 / n as f64;
    let fired: u64 = set.list().iter().map(|r| r.alerts_fired()).sum();
    println!();
    println!(
        "== alert rules: {ROUNDS} rounds of {PER_ROUND} inserts of a {}-byte json object, 10 rules vs none",
        OBJECT.len()
    );
    println!(
        "  median ns/insert: no rules {:.0}, 10 rules {:.0}; alerts fired {fired}",
        median(base),
        median(with)
    );
    println!("  evaluation alone: {eval_ns:.0} ns per object (a full serde_json::Value parse of it: {parse_ns:.0} ns)");
    let extra = median(diff);
    println!("  extra per insert with 10 rules (median of the differences): {extra:.0} ns");
    extra
}
