//! The client TLS configuration of `wss://` dials: rustls with the ring
//! provider, the webpki roots, and the CA certificates of a connection's
//! `ca_file`.

use std::path::Path;
use std::sync::Arc;

/// The rustls client configuration of `wss://` dials: the ring provider,
/// the webpki roots, plus the certificates of `ca_file` if given.
pub fn client_tls(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(p) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(p)
            .and_then(|i| i.collect())
            .map_err(|e| format!("invalid ca_file {}: {e}", p.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "invalid ca_file {}: no certificate in it",
                p.display()
            ));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("invalid ca_file {}: {e}", p.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}
