//! TLS on the node's port (`--tls-cert`, `--tls-key`, and with
//! `--tls-client-ca` client certificates): rustls, with the
//! certificate and key re-read when their files change (checked every
//! `limits::TLS_RELOAD_INTERVAL`), so a certificate rotates without a
//! restart; a pair that does not load leaves the old one serving, with a
//! warning. Handshakes run in their own tasks, bounded by
//! `CONNECTION_HANDSHAKE_TIMEOUT`, so a slow client holds up no other.

use super::connections::{Conn, Connections};
pub use crate::config::TlsFiles;
use crate::error::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::SystemTime;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// ring, the provider tonic's `tls-ring` uses too (aws-lc-rs, which adds
/// post-quantum key exchange, needs a C and cmake build this project
/// avoids; rustls marks ring's default deprecated for that reason).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the pair; says which file is wrong. Blocks.
fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>> {
    let bad = |p: &Path, e: &dyn std::fmt::Display| {
        Error::invalid(format!("{}: {e}; give a PEM file", p.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| bad(&files.cert, &e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(&files.cert, &e))?;
    if certs.is_empty() {
        return Err(bad(&files.cert, &"no certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| bad(&files.key, &e))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| bad(&files.key, &e))?;
    Ok(Arc::new(CertifiedKey::new(certs, signing)))
}

fn mtimes(files: &TlsFiles) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(&files.cert)?, m(&files.key)?))
}

/// Hands every handshake the current pair.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().expect("tls lock").clone())
    }
}

/// Loads the pair (an error stops the start) and starts watching it.
/// With `client_ca` (PEM roots), every client must present a certificate
/// they sign.
pub async fn acceptor(files: TlsFiles, client_ca: Option<&[u8]>) -> Result<TlsAcceptor> {
    let f = files.clone();
    let (key, seen) = tokio::task::spawn_blocking(move || Ok::<_, Error>((load(&f)?, mtimes(&f))))
        .await
        .map_err(|e| Error::internal(format!("tls load task: {e}")))??;
    let current = Arc::new(Current(RwLock::new(key)));
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| Error::internal(format!("tls: {e}")))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let bad = |e: &dyn std::fmt::Display| {
                Error::invalid(format!("--tls-client-ca: {e}; give PEM certificates"))
            };
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pem) {
                roots.add(c.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| bad(&e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(current.clone());
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio::spawn(watch(Arc::downgrade(&current), files, seen));
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Re-reads the pair when its files change, until the acceptor is gone.
async fn watch(
    current: Weak<Current>,
    files: TlsFiles,
    mut seen: Option<(SystemTime, SystemTime)>,
) {
    loop {
        tokio::time::sleep(crate::limits::TLS_RELOAD_INTERVAL).await;
        let Some(current) = current.upgrade() else {
            return;
        };
        let f = files.clone();
        let Ok((now, loaded)) = tokio::task::spawn_blocking(move || {
            let now = mtimes(&f);
            (now, (now != seen).then(|| load(&f)))
        })
        .await
        else {
            continue;
        };
        match loaded {
            None => {}
            Some(Ok(key)) => {
                *current.0.write().expect("tls lock") = key;
                seen = now;
                tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
            }
            Some(Err(e)) => {
                // Tried again at the next change (or a half-written pair
                // at the next look).
                seen = now;
                tracing::warn!(error = %e.message, "TLS certificate not reloaded; the old one keeps serving");
            }
        }
    }
}

/// A connection as the gRPC server reads it: plain, or TLS over it.
pub enum Io {
    /// Plain HTTP/2.
    Plain(Conn),
    /// HTTP/2 over TLS.
    Tls(Box<TlsStream<Conn>>),
}

/// The connections `conns` accepts, through TLS when there is an acceptor.
pub fn incoming(
    conns: Connections,
    tls: Option<TlsAcceptor>,
) -> Pin<Box<dyn Stream<Item = io::Result<Io>> + Send>> {
    let Some(acceptor) = tls else {
        return Box::pin(conns.map(|c| c.map(Io::Plain)));
    };
    let (tx, rx) = tokio::sync::mpsc::channel(crate::limits::MAX_STREAMS_PER_CONNECTION as usize);
    tokio::spawn(async move {
        let mut conns = std::pin::pin!(conns);
        while let Some(conn) = conns.next().await {
            let conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    if tx.send(Err(e)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let shake = acceptor.accept(conn);
                match tokio::time::timeout(crate::limits::CONNECTION_HANDSHAKE_TIMEOUT, shake).await
                {
                    Ok(Ok(s)) => {
                        let _ = tx.send(Ok(Io::Tls(Box::new(s)))).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

impl Connected for Io {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Io::Plain(c) => c.connect_info(),
            Io::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(c) => Pin::new(c).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(c) => Pin::new(c).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(c) => Pin::new(c).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(c) => Pin::new(c).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(c) => Pin::new(c).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(c) => c.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// How a client calls a TLS node: https, trusting the roots in `ca` (PEM).
pub fn client_config(ca: &[u8]) -> tonic::transport::ClientTlsConfig {
    tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
}

/// [`client_config`], presenting the certificate and key (PEM) to a node
/// that asks for client certificates.
pub fn client_config_with_identity(
    ca: &[u8],
    cert: &[u8],
    key: &[u8],
) -> tonic::transport::ClientTlsConfig {
    client_config(ca).identity(tonic::transport::Identity::from_pem(cert, key))
}
