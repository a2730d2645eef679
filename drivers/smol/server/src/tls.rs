//! TLS of the relay's own: the certificate chain and key from `TLS_CERT` and
//! `TLS_KEY` (PEM), TLS 1.2 and 1.3 only, ALPN `http/1.1`. `reload` swaps the
//! certificate for new handshakes; connections already open keep theirs.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The certificate new handshakes get.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|k| k.clone())
    }
}

pub struct Tls {
    config: Arc<ServerConfig>,
    current: Arc<Current>,
    provider: Arc<CryptoProvider>,
    cert: PathBuf,
    key: PathBuf,
}

/// Reads and checks the pair; errors name the setting at fault.
fn load(provider: &CryptoProvider, cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let at =
        |name: &str, p: &Path, e: &dyn std::fmt::Display| format!("{name} {}: {e}", p.display());
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| at("TLS_CERT", cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| at("TLS_CERT", cert, &e))?;
    if chain.is_empty() {
        return Err(at("TLS_CERT", cert, &"no certificate in the file"));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| at("TLS_KEY", key, &e))?;
    let signing =
        (provider.key_provider.load_private_key(der)).map_err(|e| at("TLS_KEY", key, &e))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match()
        .map_err(|e| at("TLS_KEY", key, &format!("does not match TLS_CERT ({e})")))?;
    Ok(pair)
}

impl Tls {
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<Tls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pair = load(&provider, &cert, &key)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(pair))));
        let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            config: Arc::new(config),
            current,
            provider,
            cert,
            key,
        })
    }

    /// Reads the files again; on an error the certificate in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let pair = load(&self.provider, &self.cert, &self.key)?;
        if let Ok(mut k) = self.current.0.write() {
            *k = Arc::new(pair);
        }
        Ok(())
    }

    /// A session for one new connection.
    pub fn session(&self) -> Option<ServerConnection> {
        ServerConnection::new(self.config.clone()).ok()
    }
}
