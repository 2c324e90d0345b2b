//! What the container image relies on in the binary (it has no shell):
//! `tsstore healthcheck` against real servers (HTTP, HTTPS, stopped, and
//! peers that answer wrongly or not at all).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

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
