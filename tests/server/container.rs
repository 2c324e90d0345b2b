//! What the container image relies on in the binary (it has no shell):
//! `tsstore healthcheck` against real servers (HTTP, HTTPS, stopped, and
//! peers that answer wrongly or not at all), and the admin key of a first
//! start kept in `TSSTORE_ADMIN_KEY_FILE`, with everything that must stay
//! as it was for a server started without that variable.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::common::{self, Server};

/// `tsstore <args>` in `cwd` with extra environment variables: (exit
/// code, stdout, stderr).
fn run(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let out = common::command(cwd)
        .envs(env.iter().copied())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run tsstore");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn port_of(srv: &Server) -> String {
    srv.addr.port().to_string()
}

#[test]
fn healthcheck_is_healthy_only_while_the_server_answers() {
    let mut srv = Server::start();
    let cwd = tempfile::tempdir().unwrap();
    let port = port_of(&srv);

    let (code, out, err) = run(cwd.path(), &[], &["healthcheck", "--port", &port]);
    assert_eq!(code, 0, "{out}{err}");
    let want = format!("healthy: http://127.0.0.1:{port}/health answered {{\"status\":\"ok\"");
    assert!(out.starts_with(&want), "{out}");

    // The port and the bind address come from the configuration as for
    // `serve`; the wildcard address means loopback.
    let (code, out, err) = run(
        cwd.path(),
        &[("TSSTORE_PORT", &port), ("TSSTORE_HOST", "0.0.0.0")],
        &["healthcheck"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(&want), "{out}");

    srv.stop();
    let (code, out, err) = run(cwd.path(), &[], &["healthcheck", "--port", &port]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(&format!("unhealthy: http://127.0.0.1:{port}/health"))
            && err.contains("not reachable"),
        "{err}"
    );
}

#[test]
fn healthcheck_fails_on_a_wrong_or_silent_answer_within_its_timeout() {
    let cwd = tempfile::tempdir().unwrap();
    // A peer that answers 503, one that answers something that is not
    // HTTP, one whose 200 is not tsstore's health, and one that never
    // answers.
    for (answer, want) in [
        (
            Some("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown"),
            "answered 503: down",
        ),
        (
            Some("SSH-2.0-OpenSSH_9.2\r\n"),
            "bad answer from the server",
        ),
        (
            Some("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"),
            "answered 200: {}",
        ),
        (None, "no answer from the server"),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let peer = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            match answer {
                Some(a) => {
                    let _ = conn.write_all(a.as_bytes());
                }
                // Holds the connection open past the client's timeout.
                None => std::thread::sleep(Duration::from_millis(2500)),
            }
        });
        let started = Instant::now();
        let (code, out, err) = run(
            cwd.path(),
            &[],
            &["healthcheck", "--port", &port, "--timeout", "1"],
        );
        assert_eq!(code, 1, "{answer:?}: {out}{err}");
        assert!(
            err.contains("unhealthy") && err.contains(want),
            "{answer:?}: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{answer:?}: took {:?} with --timeout 1",
            started.elapsed()
        );
        peer.join().unwrap();
    }
}

#[test]
fn healthcheck_rejects_bad_arguments() {
    let cwd = tempfile::tempdir().unwrap();
    for args in [
        &["healthcheck", "--timeout", "0"][..],
        &["healthcheck", "--timeout", "601"],
        &["healthcheck", "--port", "http"],
        &["healthcheck", "--port", "70000"],
        &["healthcheck", "extra"],
    ] {
        let (code, out, err) = run(cwd.path(), &[], args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains("error:"), "{args:?}: {err}");
    }
    let (code, _, err) = run(
        cwd.path(),
        &[],
        &["healthcheck", "--host", "no-such-host.invalid"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("unhealthy: cannot resolve no-such-host.invalid"),
        "{err}"
    );
    // A bad variable fails as it does for `serve`, naming it.
    let (code, _, err) = run(cwd.path(), &[("TSSTORE_PORT", "0")], &["healthcheck"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("TSSTORE_PORT"), "{err}");
}

#[test]
fn healthcheck_speaks_https_when_the_server_does() {
    let dir = tempfile::tempdir().unwrap();
    let Some((srv, cert)) = common::https_server(dir.path(), "healthcheck over HTTPS") else {
        return;
    };
    let port = port_of(&srv);
    let tls = [
        ("TSSTORE_TLS_CERT", cert.cert.to_str().unwrap()),
        ("TSSTORE_TLS_KEY", cert.key.to_str().unwrap()),
    ];
    let (code, out, err) = run(dir.path(), &tls, &["healthcheck", "--port", &port]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(&format!(
            "healthy: https://127.0.0.1:{port}/health answered"
        )),
        "{out}"
    );
    // Plain HTTP to an HTTPS server is unhealthy, not a hang.
    let (code, _, err) = run(
        dir.path(),
        &[],
        &["healthcheck", "--port", &port, "--timeout", "2"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unhealthy: http://"), "{err}");
}

/// The `tsstore admin key: ...` lines of a log.
fn printed_keys(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.strip_prefix("tsstore admin key: "))
        .map(str::to_string)
        .collect()
}

fn create_with(srv: &Server, admin: &str, name: &str) -> u16 {
    srv.post("/api/stores")
        .header("X-Admin-Key", admin)
        .json(&json!({"name": name, "num_blocks": 4}))
        .send()
        .status
}

#[test]
fn first_start_generates_the_admin_key_keeps_it_and_prints_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key_file = data.join(".admin_key");
    let key_var = key_file.to_str().unwrap();
    let start = || {
        Server::builder()
            .admin(None)
            .data_dir(&data)
            .env("TSSTORE_ADMIN_KEY_FILE", key_var)
            .start()
    };

    let mut srv = start();
    let log = srv.log();
    let printed = printed_keys(&log);
    assert_eq!(printed.len(), 1, "{log}");
    let key = &printed[0];
    assert_eq!(key.len(), 64, "{key}");
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
    assert!(
        log.contains(&format!("kept it in {key_var} (it is not printed again)")),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        format!("{key}\n")
    );
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    // No temporary file is left beside it.
    let names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    assert_eq!(create_with(&srv, key, "made"), 201);
    assert_eq!(create_with(&srv, common::ADMIN, "not"), 401);

    // The CLI reads the same file: `status` asks the running server for
    // the stats of the store it holds with that key.
    let (code, out, err) = run(
        dir.path(),
        &[("TSSTORE_ADMIN_KEY_FILE", key_var)],
        &["status", "--path", data.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("made "))
        .unwrap_or_default();
    assert!(row.ends_with("yes") && row.contains("json"), "{out}");
    assert!(!out.contains("set TSSTORE_ADMIN_KEY"), "{out}");

    // A restart keeps the key and does not print it.
    srv.stop();
    let srv = start();
    let log = srv.log();
    assert!(printed_keys(&log).is_empty(), "{log}");
    assert!(!log.contains(key.as_str()), "{log}");
    assert_eq!(create_with(&srv, key, "again"), 201);
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        format!("{key}\n")
    );
}

#[test]
fn a_configured_admin_key_wins_and_the_file_is_not_made() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("keys/admin");
    let var = key_file.to_str().unwrap();
    // TSSTORE_ADMIN_KEY (the builder's default) ...
    let srv = Server::builder().env("TSSTORE_ADMIN_KEY_FILE", var).start();
    assert!(printed_keys(&srv.log()).is_empty(), "{}", srv.log());
    assert_eq!(create_with(&srv, common::ADMIN, "env"), 201);
    assert!(!key_file.exists());
    drop(srv);
    // ... and the config file's key.
    let srv = Server::builder()
        .admin(None)
        .config(r#"{"server": {"admin_key": "abcdefghij0123456789"}}"#)
        .env("TSSTORE_ADMIN_KEY_FILE", var)
        .start();
    assert!(printed_keys(&srv.log()).is_empty(), "{}", srv.log());
    assert_eq!(create_with(&srv, "abcdefghij0123456789", "cfg"), 201);
    assert!(!key_file.exists());
    // A key written into the file by hand is used as it is (white space
    // around it ignored), and not printed.
    std::fs::create_dir_all(key_file.parent().unwrap()).unwrap();
    std::fs::write(&key_file, "  my-own-admin-key-0123456789 \n").unwrap();
    let srv = Server::builder()
        .admin(None)
        .env("TSSTORE_ADMIN_KEY_FILE", var)
        .start();
    assert!(printed_keys(&srv.log()).is_empty(), "{}", srv.log());
    assert_eq!(create_with(&srv, "my-own-admin-key-0123456789", "own"), 201);
}

#[test]
fn without_the_key_file_variable_nothing_is_generated() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (status, log) = Server::builder().admin(None).data_dir(&data).fail();
    assert!(!status.success());
    assert!(log.contains("Admin key required"), "{log}");
    assert!(printed_keys(&log).is_empty(), "{log}");
    let made: Vec<_> = std::fs::read_dir(&data)
        .map(|it| it.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(made.is_empty(), "{made:?}");
}

#[test]
fn unusable_key_files_stop_the_server_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "only-19-characters!\n").unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let a_dir = dir.path().join("a-dir");
    std::fs::create_dir(&a_dir).unwrap();
    // serve cannot make the file's directory there.
    let unmakeable = Path::new("/proc/self/no-such-dir/admin_key").to_path_buf();
    for (path, want) in [
        (&short, "holds no admin key of at least 20 characters"),
        (&empty, "holds no admin key of at least 20 characters"),
        (&a_dir, "cannot read"),
        (&unmakeable, "cannot keep a generated admin key"),
    ] {
        let (status, log) = Server::builder()
            .admin(None)
            .env("TSSTORE_ADMIN_KEY_FILE", path.to_str().unwrap())
            .fail();
        assert!(!status.success(), "{path:?}");
        assert!(
            log.contains("TSSTORE_ADMIN_KEY_FILE") && log.contains(want),
            "{path:?}: {log}"
        );
        assert!(printed_keys(&log).is_empty(), "{path:?}: {log}");
    }
    // Nothing was overwritten.
    assert_eq!(
        std::fs::read_to_string(&short).unwrap(),
        "only-19-characters!\n"
    );
    assert_eq!(std::fs::read_to_string(&empty).unwrap(), "\n");
}
