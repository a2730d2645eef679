//! Opening the WebSocket to a relay: ws:// over TCP, wss:// over rustls.

use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::WebSocketStream;
use futures_rustls::TlsConnector;
use smol::io::{AsyncRead, AsyncWrite};
use smol::net::TcpStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A plain or TLS connection.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_close(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// Where the relay is: `ws[s]://host[:port][/path]`, and for wss:// whom
/// to trust there.
#[derive(Clone, Debug)]
pub struct RelayUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Set by [`RelayUrl::with_ca_file`]: only these CAs; else the webpki roots.
    trust: Option<Arc<rustls::ClientConfig>>,
}

impl RelayUrl {
    pub fn parse(s: &str) -> Result<RelayUrl, String> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("wss://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("ws://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("the relay URL must start with wss:// or ws://".into());
        };
        let authority = rest.split('/').next().unwrap_or("");
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.to_string(),
                p.parse().map_err(|_| format!("bad port in {s}"))?,
            ),
            _ => (authority.to_string(), if tls { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(format!("no host in {s}"));
        }
        Ok(RelayUrl {
            tls,
            host,
            port,
            trust: None,
        })
    }

    /// Trusts only the CA certificates in the PEM file at `path` (a private
    /// CA), instead of the public roots.
    pub fn with_ca_file(mut self, path: &std::path::Path) -> Result<RelayUrl, String> {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let at = |e: &dyn std::fmt::Display| format!("--ca-file {}: {e}", path.display());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| at(&e))? {
            roots.add(cert.map_err(|e| at(&e))?).map_err(|e| at(&e))?;
        }
        if roots.is_empty() {
            return Err(at(&"no certificate in the file"));
        }
        self.trust = Some(Arc::new(client_config(roots)));
        Ok(self)
    }

    pub fn connect_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}:{}/tunnel/connect", self.host, self.port)
    }
}

fn client_config(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

fn tls_connector(url: &RelayUrl) -> TlsConnector {
    match &url.trust {
        Some(config) => TlsConnector::from(config.clone()),
        None => TlsConnector::from(Arc::new(client_config(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }))),
    }
}

/// Opens the tunnel WebSocket.
pub async fn dial(url: &RelayUrl) -> Result<WebSocketStream<Conn>, String> {
    let host = url.host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((host, url.port))
        .await
        .map_err(|e| format!("connect {}:{}: {e}", url.host, url.port))?;
    let _ = tcp.set_nodelay(true);
    let conn = if url.tls {
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host}: {e}"))?;
        let tls = tls_connector(url)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS to {host}: {e}"))?;
        Conn::Tls(Box::new(tls))
    } else {
        Conn::Plain(tcp)
    };
    let cfg = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let (ws, _) = async_tungstenite::client_async_with_config(url.connect_url(), conn, Some(cfg))
        .await
        .map_err(|e| format!("WebSocket upgrade: {e}"))?;
    Ok(ws)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls() {
        let u = RelayUrl::parse("wss://agent.osaurus.ai").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (true, "agent.osaurus.ai", 443)
        );
        assert_eq!(u.connect_url(), "wss://agent.osaurus.ai:443/tunnel/connect");
        let u = RelayUrl::parse("ws://127.0.0.1:8080/").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "127.0.0.1", 8080));
        assert!(RelayUrl::parse("ftp://x").is_err());
        assert!(RelayUrl::parse("ws://x:notaport").is_err());
        assert!(RelayUrl::parse("ws://").is_err());
    }
}
