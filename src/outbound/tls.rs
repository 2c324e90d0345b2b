//! The client TLS configuration of `wss://` dials: rustls with the ring
//! provider, the webpki roots, and the CA certificates of a connection's
//! `ca_file`.
//!
//! A `ca_file` is named by a client (a store key is enough), so it is read
//! only if it is a regular file inside the CA directory
//! (`server.outbound.ca_dir`) once every symlink is resolved, and never
//! more than [`CA_FILE_CAP`] bytes of it: the file is opened without
//! blocking (a FIFO cannot hold the open), its type and size are taken
//! from the opened descriptor, and at most one byte past the cap is read
//! (a file that grows meanwhile is caught). Every refusal is the same
//! [`CaFileRefused`] text, so that the answer tells nothing about the
//! server's files; the reason is for the log.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// The largest `ca_file` read.
pub const CA_FILE_CAP: u64 = 1024 * 1024;

/// Why a `ca_file` was refused (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaFileReason {
    /// Missing, unreadable, or outside the CA directory.
    NotInCaDir,
    /// A directory, FIFO, device or socket.
    NotRegular,
    TooLarge,
    /// No PEM certificate, or one rustls cannot use.
    NoCertificate,
}

/// A refused `ca_file`: one text for every reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid ca_file: must name a PEM file of CA certificates in the server's CA directory")]
pub struct CaFileRefused(pub CaFileReason);

/// Reads the `ca_file` `name` (relative to `dir`, or absolute) under the
/// rules of this module. Blocking.
pub fn read_ca_file(dir: &Path, name: &Path) -> Result<Vec<u8>, CaFileRefused> {
    use std::os::unix::fs::OpenOptionsExt;
    let refuse = |r| CaFileRefused(r);
    let outside = || refuse(CaFileReason::NotInCaDir);
    let dir = dir.canonicalize().map_err(|_| outside())?;
    let path = dir.join(name).canonicalize().map_err(|_| outside())?;
    if !path.starts_with(&dir) || path == dir {
        return Err(outside());
    }
    // The path is resolved: a symlink in its last component now is a swap
    // since; O_NOFOLLOW refuses it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOFOLLOW | nix::libc::O_NOCTTY)
        .open(&path)
        .map_err(|_| outside())?;
    let meta = file.metadata().map_err(|_| outside())?;
    if !meta.file_type().is_file() {
        return Err(refuse(CaFileReason::NotRegular));
    }
    if meta.len() > CA_FILE_CAP {
        return Err(refuse(CaFileReason::TooLarge));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    file.take(CA_FILE_CAP + 1)
        .read_to_end(&mut buf)
        .map_err(|_| outside())?;
    if buf.len() as u64 > CA_FILE_CAP {
        return Err(refuse(CaFileReason::TooLarge));
    }
    Ok(buf)
}

/// The CA certificates of the `ca_file` `name`: at least one, each one
/// rustls accepts as a root. Blocking.
pub fn ca_certificates(
    dir: &Path,
    name: &Path,
) -> Result<Vec<CertificateDer<'static>>, CaFileRefused> {
    let pem = read_ca_file(dir, name)?;
    let none = CaFileRefused(CaFileReason::NoCertificate);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| none)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in &certs {
        roots.add(c.clone()).map_err(|_| none)?;
    }
    if certs.is_empty() {
        return Err(none);
    }
    Ok(certs)
}

/// The rustls client configuration of `wss://` dials: the ring provider,
/// the webpki roots, plus `extra` roots (a connection's `ca_file`).
pub fn client_tls(
    extra: Vec<CertificateDer<'static>>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for c in extra {
        roots.add(c).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn reason(dir: &Path, name: &str) -> CaFileReason {
        read_ca_file(dir, Path::new(name)).unwrap_err().0
    }

    #[test]
    fn only_regular_files_in_the_ca_dir_under_the_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("ca");
        std::fs::create_dir(&ca).unwrap();
        std::fs::create_dir(ca.join("sub")).unwrap();
        std::fs::write(ca.join("ok.pem"), b"pem").unwrap();
        std::fs::write(ca.join("sub/deep.pem"), b"deep").unwrap();
        std::fs::write(tmp.path().join("outside.pem"), b"secret").unwrap();
        symlink(ca.join("ok.pem"), ca.join("inside-link.pem")).unwrap();
        symlink(tmp.path().join("outside.pem"), ca.join("escape.pem")).unwrap();
        symlink("/dev/zero", ca.join("zero.pem")).unwrap();
        let f = std::fs::File::create(ca.join("huge.pem")).unwrap();
        f.set_len(64 * CA_FILE_CAP).unwrap();
        std::fs::write(ca.join("cap.pem"), vec![b'x'; CA_FILE_CAP as usize]).unwrap();
        std::fs::write(ca.join("over.pem"), vec![b'x'; CA_FILE_CAP as usize + 1]).unwrap();
        let fifo = ca.join("fifo.pem");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();

        let read = |n: &str| read_ca_file(&ca, Path::new(n)).unwrap();
        assert_eq!(read("ok.pem"), b"pem");
        assert_eq!(read(ca.join("ok.pem").to_str().unwrap()), b"pem");
        assert_eq!(read("sub/deep.pem"), b"deep");
        assert_eq!(read("sub/../ok.pem"), b"pem");
        assert_eq!(read("inside-link.pem"), b"pem");
        assert_eq!(read("cap.pem").len() as u64, CA_FILE_CAP);

        use CaFileReason::*;
        assert_eq!(reason(&ca, "escape.pem"), NotInCaDir);
        assert_eq!(reason(&ca, "../outside.pem"), NotInCaDir);
        assert_eq!(
            reason(&ca, tmp.path().join("outside.pem").to_str().unwrap()),
            NotInCaDir
        );
        assert_eq!(reason(&ca, "zero.pem"), NotInCaDir);
        assert_eq!(reason(&ca, "/dev/zero"), NotInCaDir);
        assert_eq!(reason(&ca, "/etc/passwd"), NotInCaDir);
        assert_eq!(reason(&ca, "missing.pem"), NotInCaDir);
        assert_eq!(reason(&ca, ""), NotInCaDir);
        assert_eq!(reason(&ca, "."), NotInCaDir);
        assert_eq!(reason(&ca, "sub"), NotRegular);
        // Opened without blocking: no writer is needed for the answer.
        assert_eq!(reason(&ca, "fifo.pem"), NotRegular);
        assert_eq!(reason(&ca, "huge.pem"), TooLarge);
        assert_eq!(reason(&ca, "over.pem"), TooLarge);
        // No CA directory: everything is refused.
        assert_eq!(reason(&tmp.path().join("none"), "ok.pem"), NotInCaDir);
    }

    #[test]
    fn certificates_must_parse() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("text.pem"), b"hello\n").unwrap();
        std::fs::write(
            tmp.path().join("bad.pem"),
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for n in ["text.pem", "bad.pem"] {
            let e = ca_certificates(tmp.path(), Path::new(n)).unwrap_err();
            assert_eq!(e.0, CaFileReason::NoCertificate, "{n}");
        }
        // Every reason reads the same to the client.
        assert_eq!(
            CaFileRefused(CaFileReason::NoCertificate).to_string(),
            CaFileRefused(CaFileReason::NotInCaDir).to_string()
        );
    }
}
