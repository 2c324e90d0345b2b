//! The command line of the real binary: `create`, `key list|regenerate|
//! revoke` (also against a running server), `status`, `calc`, `version`.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::json;

use super::common::{self, Server, Store};

fn run(cwd: &Path, args: &[&str]) -> (bool, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = common::cli(cwd, args);
    (
        status.success(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// `tsstore create` with `--path`; the API key it printed.
fn create(cwd: &Path, data: &Path, name: &str, extra: &[&str]) -> Store {
    let mut args = vec!["create", name, "--path", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (ok, out, err) = run(cwd, &args);
    assert!(ok, "create {name}: {out}{err}");
    Store {
        name: name.into(),
        key: field(&out, "API Key:"),
    }
}

/// The value after `label` on its line.
fn field(out: &str, label: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in {out}"))
        .trim()
        .to_string()
}

fn status_of(srv: &Server, s: &Store, key: &str) -> u16 {
    srv.get(&s.path("/stats")).key(key).send().status
}

#[test]
fn create_prints_the_key_once_and_the_server_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let (ok, out, err) = run(
        dir.path(),
        &[
            "create",
            "sensors",
            "--path",
            d,
            "--blocks",
            "16",
            "--data-size",
            "1024",
            "--index-size",
            "512",
            "--type",
            "schema",
        ],
    );
    assert!(ok, "{out}{err}");
    let key = field(&out, "API Key:");
    let id = field(&out, "Key ID:");
    let want = format!(
        "=== STORE CREATED ===\nName:        sensors\nPath:        {d}/sensors\nData Type:   schema\nBlocks:      16\nData Size:   1024 bytes\nIndex Size:  512 bytes\n\nKey ID:      {id}\nAPI Key:     {key}\n\nWARNING: The API key is shown only once. Save it securely!\n"
    );
    assert_eq!(out, want);
    assert_eq!(key.len(), 44);
    assert!(key.starts_with("tsstore_"));
    assert_eq!(&key[8..16], id);
    // The key is stored only as a hash.
    let keys_json = std::fs::read_to_string(data.join("sensors/keys.json")).unwrap();
    assert!(!keys_json.contains(&key), "{keys_json}");
    // Defaults: 1024 blocks of 4096, json.
    let dflt = create(dir.path(), &data, "plain", &[]);

    let srv = Server::builder().data_dir(&data).start();
    let s = Store {
        name: "sensors".into(),
        key: key.clone(),
    };
    let r = srv.get(&s.path("/stats")).key(&key).send();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (
            &v["num_blocks"],
            &v["data_block_size"],
            &v["index_block_size"],
            &v["data_type"]
        ),
        (&json!(16), &json!(1024), &json!(512), &json!("schema"))
    );
    let r = srv.get(&dflt.path("/stats")).key(&dflt.key).send();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (
            &v["num_blocks"],
            &v["data_block_size"],
            &v["index_block_size"],
            &v["data_type"]
        ),
        (&json!(1024), &json!(4096), &json!(4096), &json!("json"))
    );
    // One store's key does not open the other.
    assert_eq!(status_of(&srv, &dflt, &key), 401);
    let r = srv
        .post(&dflt.path("/data"))
        .key(&dflt.key)
        .json(&json!({"data": {"from": "cli"}}))
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
}

#[test]
fn create_rejects_bad_names_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let long = "n".repeat(65);
    for (args, want) in [
        (
            vec!["create", "../x", "--path", d],
            "Failed to create store",
        ),
        (vec!["create", "a/b", "--path", d], "Failed to create store"),
        (vec!["create", "a b", "--path", d], "Failed to create store"),
        (vec!["create", &long, "--path", d], "Failed to create store"),
        (vec!["create", "", "--path", d], "Failed to create store"),
        (
            vec!["create", "s", "--path", d, "--data-size", "1000"],
            "data_block_size",
        ),
        (
            vec!["create", "s", "--path", d, "--data-size", "32"],
            "data_block_size",
        ),
        (
            vec!["create", "s", "--path", d, "--index-size", "100"],
            "index_block_size",
        ),
        (
            vec!["create", "s", "--path", d, "--blocks", "0"],
            "num_blocks",
        ),
        (vec!["create", "s", "--path", d, "--blocks", "-3"], ""),
        (vec!["create", "s", "--path", d, "--blocks", "x"], ""),
        (
            vec!["create", "s", "--path", d, "--type", "xml"],
            "invalid data type: must be binary, text, json, or schema",
        ),
        (vec!["create"], ""),
    ] {
        let (ok, out, err) = run(dir.path(), &args);
        assert!(!ok, "{args:?} succeeded: {out}");
        assert!(!err.trim().is_empty(), "{args:?}: no message");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!out.contains("API Key"), "{args:?}: {out}");
    }
    // Nothing was made, inside or outside the data dir.
    let made: Vec<_> = std::fs::read_dir(&data)
        .map(|it| it.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(made.is_empty(), "{made:?}");
    assert!(!dir.path().join("x").exists());
    // A duplicate.
    create(dir.path(), &data, "s", &["--blocks", "4"]);
    let (ok, _, err) = run(dir.path(), &["create", "s", "--path", d]);
    assert!(!ok);
    assert!(err.contains("store already exists"), "{err}");
}

#[test]
fn key_management_takes_effect_on_a_running_server() {
    let srv = Server::start();
    let data = srv.data().to_path_buf();
    let d = data.to_str().unwrap();
    let cwd = srv.work();
    let s = create(cwd, &data, "k", &["--blocks", "4"]);
    let other = srv.json_store("other");

    // list
    let (ok, out, err) = run(cwd, &["key", "list", "k", "--path", d]);
    assert!(ok, "{err}");
    let id = &s.key[8..16];
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "API keys for store 'k':");
    assert_eq!(lines[1], "ID        Created                    Note");
    assert_eq!(lines[2], "--------  -------------------------  ----");
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[3].starts_with(&format!("{id}  ")), "{out}");
    assert!(lines[3].ends_with("  Initial key"), "{out}");
    assert!(lines[3].contains(" UTC"), "{out}");

    // The server has verified (and cached) the old key.
    assert_eq!(status_of(&srv, &s, &s.key), 200);

    // regenerate: the old key stops working within a second.
    let (ok, out, err) = run(cwd, &["key", "regenerate", "k", "--path", d]);
    let changed = Instant::now();
    assert!(ok, "{err}");
    assert!(
        out.starts_with("=== NEW API KEY ===\nStore:   k\n"),
        "{out}"
    );
    assert!(
        out.contains("All previous keys have been revoked."),
        "{out}"
    );
    let new_key = field(&out, "API Key:");
    let new_id = field(&out, "Key ID:");
    assert_eq!(&new_key[8..16], new_id);
    assert_ne!(new_key, s.key);
    assert!(
        common::eventually(Duration::from_secs(1), || status_of(&srv, &s, &s.key)
            == 401),
        "old key still accepted"
    );
    assert!(changed.elapsed() < Duration::from_secs(2));
    assert_eq!(status_of(&srv, &s, &new_key), 200);
    let r = srv.get(&s.path("/stats")).key(&s.key).send();
    assert_eq!(r.error(), "invalid API key");
    let (_, out, _) = run(cwd, &["key", "list", "k", "--path", d]);
    assert!(
        out.contains(&new_id) && out.contains("Regenerated via CLI"),
        "{out}"
    );
    assert!(!out.contains(id), "{out}");

    // revoke: an unknown id fails, the right one stops the key.
    let (ok, _, err) = run(cwd, &["key", "revoke", "k", "deadbeef", "--path", d]);
    assert!(!ok);
    assert!(err.contains("API key not found"), "{err}");
    assert_eq!(status_of(&srv, &s, &new_key), 200);
    let (ok, out, err) = run(cwd, &["key", "revoke", "k", &new_id, "--path", d]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("Key '{new_id}' revoked for store 'k'"));
    assert!(
        common::eventually(Duration::from_secs(1), || status_of(&srv, &s, &new_key)
            == 401),
        "revoked key still accepted"
    );
    let (ok, out, _) = run(cwd, &["key", "list", "k", "--path", d]);
    assert!(ok);
    assert_eq!(out.trim(), "No API keys found for store 'k'");
    // The admin key still opens the store; the other store is untouched.
    assert_eq!(srv.get(&s.path("/stats")).admin().send().status, 200);
    assert_eq!(status_of(&srv, &other, &other.key), 200);

    // A new key after a revoke works again.
    let (ok, out, _) = run(cwd, &["key", "regenerate", "k", "--path", d]);
    assert!(ok);
    let k3 = field(&out, "API Key:");
    assert!(common::eventually(Duration::from_secs(1), || status_of(
        &srv, &s, &k3
    ) == 200));

    // Errors: unknown stores, bad names, missing arguments.
    for args in [
        vec!["key", "list", "nope", "--path", d],
        vec!["key", "regenerate", "nope", "--path", d],
        vec!["key", "revoke", "nope", "abcd1234", "--path", d],
        vec!["key", "list", "../k", "--path", d],
        vec!["key", "revoke", "k", "--path", d],
        vec!["key", "list"],
        vec!["key"],
    ] {
        let (ok, _, err) = run(cwd, &args);
        assert!(!ok, "{args:?}");
        assert!(!err.trim().is_empty(), "{args:?}");
    }
    assert!(!data.join("nope").exists(), "regenerate made a store dir");
}

#[test]
fn status_lists_stores_and_sees_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let (ok, out, err) = run(dir.path(), &["status", "--path", d]);
    assert!(ok, "{err}");
    assert!(out.contains("not running"), "{out}");
    create(
        dir.path(),
        &data,
        "alpha",
        &["--blocks", "8", "--type", "text"],
    );
    create(
        dir.path(),
        &data,
        "beta",
        &["--blocks", "4", "--type", "binary"],
    );
    let (ok, out, err) = run(dir.path(), &["status", "--path", d]);
    assert!(ok, "{err}");
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row: {out}"))
            .to_string()
    };
    assert!(row("alpha").contains("text"), "{out}");
    assert!(row("beta").contains("binary"), "{out}");
    assert!(out.contains("not running"), "{out}");
    assert!(
        out.find("alpha").unwrap() < out.find("beta").unwrap(),
        "sorted: {out}"
    );

    // A server that has not touched any store yet.
    let srv = Server::builder().data_dir(&data).start();
    let (ok, out, err) = run(dir.path(), &["status", "--path", d]);
    assert!(ok, "{err}");
    assert!(
        out.lines().any(|l| l.starts_with("Server: running")),
        "a running server is seen before it opens a store: {out}"
    );
    assert!(out.contains("alpha") && out.contains("beta"), "{out}");
    assert!(out.contains(&srv.addr.to_string()), "{out}");
    // A second server on the same data path refuses to start.
    let (status, log) = Server::builder().data_dir(&data).fail();
    assert!(!status.success());
    assert!(log.contains("another tsstore server is running"), "{log}");
    // With a store open in the server.
    let s = srv.json_store("gamma");
    let r = srv
        .post(&s.path("/data"))
        .key(&s.key)
        .json(&json!({"data": 1}))
        .send();
    assert_eq!(r.status, 201);
    let (ok, out, err) = run(dir.path(), &["status", "--path", d]);
    assert!(ok, "{err}");
    assert!(out.contains("gamma"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("Server: running")),
        "{out}"
    );
    // Without the admin key the held store's stats cannot be asked for...
    let gamma_row = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("gamma"))
            .unwrap_or_else(|| panic!("no gamma row: {out}"))
            .to_string()
    };
    assert!(gamma_row(&out).contains("TSSTORE_ADMIN_KEY"), "{out}");
    // ...with it, the server answers them.
    let o = common::command(dir.path())
        .args(["status", "--path", d])
        .env("TSSTORE_ADMIN_KEY", common::ADMIN)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let row = gamma_row(&out);
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1], "json", "{out}");
    assert_eq!(cols[cols.len() - 4], "1", "one object: {out}");
    assert_eq!(*cols.last().unwrap(), "yes", "{out}");
    drop(srv);
    let (ok, out, _) = run(dir.path(), &["status", "--path", d]);
    assert!(ok);
    assert!(out.contains("not running"), "{out}");
    assert!(row_count(&out, "gamma") == 1, "{out}");
}

fn row_count(out: &str, name: &str) -> usize {
    out.lines().filter(|l| l.starts_with(name)).count()
}

#[test]
fn calc_forward_and_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = run(
        dir.path(),
        &[
            "calc",
            "--blocks",
            "1024",
            "--data-size",
            "4096",
            "--object-size",
            "100",
            "--rate",
            "1",
        ],
    );
    assert!(ok, "{err}");
    // (4096 - 32 block header) / (16 record header + 100) = 35 per block.
    assert!(out.contains("Objects per block: 35"), "{out}");
    assert!(out.contains("Capacity:          35840 objects"), "{out}");
    assert!(out.contains("Retention:         9h 57m"), "{out}");
    let (ok, out, err) = run(
        dir.path(),
        &[
            "calc",
            "--retention",
            "7d",
            "--rate",
            "10",
            "--object-size",
            "100",
        ],
    );
    assert!(ok, "{err}");
    // 7 days at 10/s = 6,048,000 objects / 35 = 172,800 blocks + the head.
    assert!(out.contains("Blocks needed:     172801"), "{out}");
    // Objects larger than a block span several.
    let (ok, out, _) = run(
        dir.path(),
        &[
            "calc",
            "--blocks",
            "100",
            "--data-size",
            "256",
            "--object-size",
            "1000",
        ],
    );
    assert!(ok);
    assert!(out.contains("Blocks per object: 5"), "{out}");
    assert!(out.contains("Capacity:          20 objects"), "{out}");
    for args in [
        vec!["calc", "--retention", "7x"],
        vec!["calc", "--rate", "0"],
        vec!["calc", "--data-size", "1000"],
    ] {
        let (ok, out, err) = run(dir.path(), &args);
        assert!(!ok, "{args:?}: {out}");
        assert!(!err.trim().is_empty(), "{args:?}");
        assert!(out.is_empty(), "{args:?}: no partial output: {out}");
    }
}

#[test]
fn version_prints_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, _) = run(dir.path(), &["version"]);
    assert!(ok);
    assert_eq!(
        out.trim(),
        format!("tsstore v{}", env!("CARGO_PKG_VERSION"))
    );
    let (ok, out, _) = run(dir.path(), &["--version"]);
    assert!(ok);
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    let (ok, _, _) = run(dir.path(), &["no-such-command"]);
    assert!(!ok);
}

#[test]
fn cli_uses_the_configured_data_path() {
    let dir = tempfile::tempdir().unwrap();
    // TSSTORE_DATA_PATH.
    let env_data = dir.path().join("from-env");
    let out = common::command(dir.path())
        .args(["create", "e", "--blocks", "4"])
        .env("TSSTORE_DATA_PATH", &env_data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(env_data.join("e/keys.json").is_file());
    let out = common::command(dir.path())
        .args(["key", "list", "e"])
        .env("TSSTORE_DATA_PATH", &env_data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Initial key"));
    // ./config.json in the working directory.
    let file_data = dir.path().join("from-file");
    std::fs::write(
        dir.path().join("config.json"),
        format!(r#"{{"store": {{"base_path": "{}"}}}}"#, file_data.display()),
    )
    .unwrap();
    let (ok, out, err) = run(dir.path(), &["create", "f", "--blocks", "4"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("Path:        {}/f", file_data.display())),
        "{out}"
    );
    assert!(file_data.join("f/keys.json").is_file());
    let (ok, out, _) = run(dir.path(), &["status"]);
    assert!(ok);
    assert!(out.lines().any(|l| l.starts_with("f ")), "{out}");
    // --path wins over both.
    let flag_data = dir.path().join("from-flag");
    let out = common::command(dir.path())
        .args(["create", "g", "--blocks", "4", "--path"])
        .arg(&flag_data)
        .env("TSSTORE_DATA_PATH", &env_data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(flag_data.join("g").is_dir());
    assert!(!env_data.join("g").exists() && !file_data.join("g").exists());
}
