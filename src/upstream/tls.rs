//! Whom the connections to Telavox trust: the platform's CA store (native
//! roots, where a company adds its own CAs), Mozilla's roots (for a
//! container without a CA store), and the certificates of
//! `upstream.ca_file` (a private CA, such as a TLS-inspecting proxy's).
//! The live sockets and the GraphQL client trust the same set.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// `upstream.ca_file` cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("config key `upstream.ca_file`: cannot use {path} as a CA: {message}")]
pub struct CaFileError {
    path: String,
    message: String,
}

/// The trust of the upstream connections.
#[derive(Clone)]
pub struct UpstreamTls {
    /// For the live sockets.
    config: Arc<rustls::ClientConfig>,
    /// `upstream.ca_file`'s certificates, for the GraphQL client (which
    /// adds the native and Mozilla roots itself).
    extra: Vec<CertificateDer<'static>>,
}

impl UpstreamTls {
    /// The native and Mozilla roots, plus `ca_file`'s certificates (a PEM
    /// bundle) when given.
    pub fn load(ca_file: Option<&Path>) -> Result<UpstreamTls, CaFileError> {
        let extra = match ca_file {
            Some(path) => read_bundle(path)?,
            None => Vec::new(),
        };
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        // A platform store that cannot be read (none in a scratch image)
        // leaves the other roots.
        if let Ok(native) = rustls_native_certs::load_native_certs() {
            roots.add_parsable_certificates(native);
        }
        roots.add_parsable_certificates(extra.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(UpstreamTls {
            config: Arc::new(config),
            extra,
        })
    }

    /// The live sockets' TLS.
    pub fn connector(&self) -> tokio_tungstenite::Connector {
        tokio_tungstenite::Connector::Rustls(self.config.clone())
    }

    /// `upstream.ca_file`'s certificates, for reqwest.
    pub fn extra_roots(&self) -> Vec<reqwest::Certificate> {
        self.extra
            .iter()
            .filter_map(|der| reqwest::Certificate::from_der(der).ok())
            .collect()
    }
}

fn read_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaFileError> {
    let error = |message: String| CaFileError {
        path: path.display().to_string(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(format!("not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(error("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_a_certificate_is_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = UpstreamTls::load(Some(&path)).err().expect("refused");
        let text = e.to_string();
        assert!(text.contains("upstream.ca_file"), "{text}");
        assert!(text.contains("no PEM certificate"), "{text}");
        let missing = UpstreamTls::load(Some(&dir.path().join("missing.pem")));
        assert!(missing.is_err());
    }

    #[test]
    fn without_a_ca_file_the_public_roots_are_trusted() {
        let tls = UpstreamTls::load(None).unwrap();
        assert!(tls.extra_roots().is_empty());
    }
}
