//! systemd service notifications (`sd_notify(3)`): `READY=1` once every
//! listener is up, `WATCHDOG=1` at half the `WATCHDOG_USEC` interval while
//! the runtime and the store registry answer, `STOPPING=1` when shutdown
//! starts.
//!
//! Without `NOTIFY_SOCKET` nothing is sent, so the same binary runs outside
//! systemd unchanged. A failed send is logged and otherwise ignored: the
//! server never stops because its supervisor went away.
//!
//! No crate: std's `UnixDatagram` does it in a few lines, and writing it
//! here lets us follow `sd_watchdog_enabled(3)` exactly (an absent
//! `WATCHDOG_PID` means "this process") and reach abstract sockets (`@`).

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use crate::registry::Registry;

/// How long a send may wait on a full supervisor queue.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `state` (`"READY=1"`, ...) to `$NOTIFY_SOCKET`; `Ok(false)` when
/// the variable is unset (not under a supervisor).
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let addr = socket_addr(&target)?;
    let sock = UnixDatagram::unbound()?;
    // Blocking, like libsystemd's: a full queue waits for the supervisor,
    // but not for ever.
    sock.set_write_timeout(Some(SEND_TIMEOUT))?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}

/// [`notify`], with a failure logged instead of returned.
pub fn send(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(error = %e, state, "systemd notification failed");
    }
}

/// The address `NOTIFY_SOCKET` names: a path, or an abstract name when it
/// starts with `@`.
fn socket_addr(target: &OsStr) -> io::Result<SocketAddr> {
    match target.as_bytes() {
        [] => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is empty",
        )),
        [b'@', name @ ..] => SocketAddr::from_abstract_name(name),
        _ => SocketAddr::from_pathname(target),
    }
}

/// How often to send `WATCHDOG=1` (half the supervisor's interval), from
/// the values of `WATCHDOG_USEC` and `WATCHDOG_PID`; `None` when the
/// watchdog is off or meant for another process.
pub fn watchdog_period(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// Spawns the watchdog task when `WATCHDOG_USEC` (and `NOTIFY_SOCKET`) are
/// set. Each tick first proves the store registry is not stuck (its lock
/// is taken on a blocking thread within one period); a tick that cannot
/// prove it sends nothing, so a hung server gets restarted. A store that
/// takes minutes to recover does not withhold the ping: the registry never
/// holds its lock across a store's disk work.
pub fn spawn_watchdog(stores: Arc<Registry>) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    let Some(period) = watchdog_period(usec.as_deref(), pid.as_deref(), std::process::id()) else {
        return;
    };
    tracing::info!(?period, "systemd watchdog enabled");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A failing send is logged once, not every period, until one works.
        let mut failing = false;
        loop {
            tick.tick().await;
            let probe = stores.clone();
            // The send too runs on the blocking thread: a full supervisor
            // queue blocks it (up to SEND_TIMEOUT), never a runtime worker.
            let alive = tokio::time::timeout(
                period,
                tokio::task::spawn_blocking(move || {
                    probe.probe();
                    notify("WATCHDOG=1")
                }),
            )
            .await;
            match alive {
                Ok(Ok(Err(e))) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "systemd watchdog ping failed");
                }
                Ok(Ok(Err(_))) => {}
                Ok(Ok(Ok(_))) => failing = false,
                _ => tracing::error!("store registry unresponsive; watchdog ping withheld"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_period_follows_sd_watchdog_enabled() {
        let ms = Duration::from_millis;
        assert_eq!(watchdog_period(Some("200000"), None, 7), Some(ms(100)));
        assert_eq!(watchdog_period(Some("200000"), Some("7"), 7), Some(ms(100)));
        assert_eq!(watchdog_period(Some("200000"), Some("8"), 7), None);
        assert_eq!(watchdog_period(Some("200000"), Some("x"), 7), None);
        assert_eq!(watchdog_period(Some("0"), None, 7), None);
        assert_eq!(watchdog_period(Some("soon"), None, 7), None);
        assert_eq!(watchdog_period(None, Some("7"), 7), None);
    }

    #[test]
    fn socket_addr_paths_and_abstract_names() {
        let a = socket_addr(OsStr::new("/run/systemd/notify")).unwrap();
        assert_eq!(
            a.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let a = socket_addr(OsStr::new("@tsstore/notify")).unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"tsstore/notify"[..]));
        assert!(socket_addr(OsStr::new("")).is_err());
    }

    #[test]
    fn abstract_socket_receives() {
        let name = format!("tsstore-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        let tx = UnixDatagram::unbound().unwrap();
        let addr = socket_addr(OsStr::new(&format!("@{name}"))).unwrap();
        tx.send_to_addr(b"READY=1", &addr).unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
