//! The command line's requests to a server on this machine (`tsstore
//! healthcheck`, and `tsstore status` asking for the stats of stores a
//! running server holds): one HTTP/1.1 GET with `Connection: close` over a
//! blocking socket, bounded by a timeout, with no async runtime.
//!
//! Over HTTPS the server's certificate is not verified: these requests go
//! to the server's own address on this machine, whose certificate is made
//! for the names clients use, not for that address. A caller that sends a
//! secret must therefore not use HTTPS here (see `commands::status`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// A response: the status code and the body as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// The address a client on this machine reaches a server bound to `host`
/// and `port` at (see [`reachable`]).
pub fn local_addr(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .map(reachable)
        .ok_or_else(|| format!("cannot resolve {host}"))
}

/// A server's bound address as a local client dials it: a wildcard
/// (`0.0.0.0`, `::`) becomes the loopback address of its family.
pub fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr
}

/// `GET path` at `addr` with the extra `headers`, over HTTPS when `tls`;
/// connecting, sending and reading each bounded by `timeout`.
pub fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    tls: bool,
    timeout: Duration,
) -> Result<Response, String> {
    let conn = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("server not reachable at {addr}: {e}"))?;
    let _ = conn.set_read_timeout(Some(timeout));
    let _ = conn.set_write_timeout(Some(timeout));
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    let raw = if tls {
        let server = rustls::pki_types::ServerName::from(addr.ip());
        let tls = rustls::ClientConnection::new(unverified_tls()?, server)
            .map_err(|e| format!("TLS: {e}"))?;
        exchange(rustls::StreamOwned::new(tls, conn), &request)?
    } else {
        exchange(conn, &request)?
    };
    parse(&raw)
}

fn exchange(mut s: impl Read + Write, request: &str) -> Result<Vec<u8>, String> {
    s.write_all(request.as_bytes())
        .and_then(|()| s.flush())
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut raw = Vec::new();
    // A TLS peer that closes without close_notify still sent a whole
    // response when its framing says so; `parse` checks that.
    if let Err(e) = s.read_to_end(&mut raw) {
        if raw.is_empty() || e.kind() != std::io::ErrorKind::UnexpectedEof {
            return Err(format!("no answer from the server: {e}"));
        }
    }
    Ok(raw)
}

/// Status line, headers and a `Content-Length` or close-delimited body.
fn parse(raw: &[u8]) -> Result<Response, String> {
    let end = memchr::memmem::find(raw, b"\r\n\r\n")
        .ok_or("bad answer from the server: no header end")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let body = &raw[end + 4..];
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("bad answer from the server: {status_line:?}"))?;
    let length = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    let body = match length {
        Some(n) if body.len() < n => return Err("bad answer from the server: truncated".into()),
        Some(n) => &body[..n],
        None => body,
    };
    Ok(Response {
        status,
        body: String::from_utf8_lossy(body).into_owned(),
    })
}

/// A TLS client configuration that accepts any certificate but still
/// checks the handshake's signatures with it (ring's algorithms).
fn unverified_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCertificate(provider.clone()));
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_framed_body() {
        let r = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        let r = parse(b"HTTP/1.1 503 Service Unavailable\r\n\r\ndown").unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "down"));
        for bad in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn wildcard_bind_addresses_become_loopback() {
        assert_eq!(
            local_addr("0.0.0.0", 21080).unwrap(),
            "127.0.0.1:21080".parse().unwrap()
        );
        assert_eq!(local_addr("::", 8).unwrap(), "[::1]:8".parse().unwrap());
        assert_eq!(
            local_addr("127.0.0.2", 9).unwrap(),
            "127.0.0.2:9".parse().unwrap()
        );
    }
}
