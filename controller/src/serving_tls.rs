//! TLS for the node and admin APIs with a certificate that can be replaced
//! while the controller runs.
//!
//! tonic's own TLS takes one certificate for the life of the server, so a
//! controller serving a certificate from its own CA would have to restart
//! before it expired. Here the controller terminates TLS itself (rustls,
//! as tonic does, with HTTP/2 negotiated by ALPN) and each handshake takes
//! the certificate in force at that moment: renewal ([`spawn_renewal`])
//! swaps it, open connections keep theirs. Requests still carry tonic's
//! `TlsConnectInfo`, so peer addresses and client certificates (mTLS) read
//! as before.

use std::io;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::IntGauge;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_stream::{Stream, StreamExt};
use zeroize::Zeroizing;

use crate::listener::{Incoming, Tracked};
use crate::write_coalescing::Coalesced;

/// HTTP/2, the only protocol gRPC speaks.
const ALPN_H2: &[u8] = b"h2";

/// A certificate and key pair in PEM, as issued or read from files.
pub type PemPair = (String, Zeroizing<String>);

/// The serving certificate in force, swapped whole on renewal.
pub struct ServingCert {
    provider: Arc<CryptoProvider>,
    current: RwLock<Served>,
}

#[derive(Clone)]
struct Served {
    key: Arc<CertifiedKey>,
    not_before: i64,
    not_after: i64,
    /// When it was put in force: renewal counts from here, not from
    /// `not_before`, which is backdated for clock skew.
    loaded_at: i64,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (not_before, not_after) = self.validity();
        f.debug_struct("ServingCert")
            .field("not_before", &not_before)
            .field("not_after", &not_after)
            .finish_non_exhaustive()
    }
}

impl ServingCert {
    /// The first certificate.
    pub fn new(pair: &PemPair) -> Result<Arc<Self>, String> {
        let provider = Arc::new(ring::default_provider());
        let served = load(&provider, pair)?;
        Ok(Arc::new(ServingCert {
            provider,
            current: RwLock::new(served),
        }))
    }

    /// Serves `pair` from the next handshake on.
    pub fn replace(&self, pair: &PemPair) -> Result<(), String> {
        let served = load(&self.provider, pair)?;
        *crate::locks::write(&self.current) = served;
        Ok(())
    }

    /// The certificate's validity, Unix seconds.
    pub fn validity(&self) -> (i64, i64) {
        let s = crate::locks::read(&self.current);
        (s.not_before, s.not_after)
    }

    /// When the certificate in force is due for renewal: after
    /// `refresh_fraction` of the life it had left when it was put in force.
    fn renewal_due(&self, refresh_fraction: f64) -> i64 {
        let s = crate::locks::read(&self.current);
        renewal_due(s.loaded_at, s.not_after, refresh_fraction)
    }

    #[cfg(test)]
    fn leaf(&self) -> Vec<u8> {
        let s = crate::locks::read(&self.current);
        s.key.cert.first().map(|c| c.to_vec()).unwrap_or_default()
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&crate::locks::read(&self.current).key))
    }
}

fn load(provider: &CryptoProvider, (cert_pem, key_pem): &PemPair) -> Result<Served, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    let leaf = chain.first().ok_or("certificate: no certificate in PEM")?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| format!("certificate: {e}"))?;
    let validity = parsed.validity();
    let (not_before, not_after) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("private key: {e}"))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("private key: {e}"))?;
    let key = CertifiedKey::new(chain, signing);
    key.keys_match()
        .map_err(|e| format!("key and certificate: {e}"))?;
    Ok(Served {
        key: Arc::new(key),
        not_before,
        not_after,
        loaded_at: unix_now(),
    })
}

/// What the TLS side of the listener needs.
#[derive(Clone)]
pub struct ServingTls {
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
}

impl ServingTls {
    /// Serves `cert`; with `client_ca_pem`, asks for client certificates
    /// from that CA (optional: Kerberos callers present none).
    pub fn new(
        cert: Arc<ServingCert>,
        client_ca_pem: Option<&[u8]>,
        handshake_timeout: Duration,
    ) -> Result<Self, String> {
        let builder = ServerConfig::builder_with_provider(Arc::clone(&cert.provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match client_ca_pem {
            None => builder.with_no_client_auth(),
            Some(pem) => {
                let mut roots = RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(pem) {
                    let c = c.map_err(|e| format!("client CA: {e}"))?;
                    roots.add(c).map_err(|e| format!("client CA: {e}"))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&cert.provider),
                )
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("client CA: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(cert);
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(ServingTls {
            config: Arc::new(config),
            handshake_timeout,
        })
    }

    /// The accepted connections with their TLS handshakes done. Handshakes
    /// run concurrently, each within the handshake timeout, so a slow
    /// client holds up no one; failed handshakes are dropped. Accepting
    /// stops when the server drops the stream.
    pub fn incoming(
        &self,
        mut incoming: Incoming,
    ) -> impl Stream<Item = io::Result<Coalesced<TlsStream<Tracked<TcpStream>>>>> + Send + 'static
    {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let acceptor = TlsAcceptor::from(Arc::clone(&self.config));
        let timeout = self.handshake_timeout;
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = incoming.next() => next,
                    () = tx.closed() => break,
                };
                let conn = match next {
                    Some(Ok(conn)) => conn,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "accept failed");
                        continue;
                    }
                    None => break,
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(timeout, acceptor.accept(conn)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(Coalesced::new(tls))).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// Renews the serving certificate from `issue` once `refresh_fraction` of
/// its validity has passed, and keeps `expiry` at its notAfter. A failed
/// renewal is retried (the certificate in force still serves meanwhile).
pub fn spawn_renewal(
    cert: Arc<ServingCert>,
    refresh_fraction: f64,
    expiry: IntGauge,
    issue: impl Fn() -> Result<PemPair, String> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (_, not_after) = cert.validity();
            expiry.set(not_after);
            let due = cert.renewal_due(refresh_fraction);
            let wait = u64::try_from(due.saturating_sub(unix_now())).unwrap_or(0);
            // Woken at least hourly: a suspended host's clock jumps. At
            // least a second apart: a certificate clamped to the CA's end
            // is due at once, every time.
            tokio::time::sleep(Duration::from_secs(wait.clamp(1, 3600))).await;
            if unix_now() < due {
                continue;
            }
            match issue().and_then(|pair| cert.replace(&pair)) {
                Ok(()) => {
                    let (_, not_after) = cert.validity();
                    expiry.set(not_after);
                    tracing::info!(not_after, "serving certificate renewed");
                }
                Err(e) => {
                    tracing::error!(error = %e, "serving certificate renewal failed; retrying");
                    let left = not_after.saturating_sub(unix_now()).max(2);
                    let retry = u64::try_from(left / 10).unwrap_or(1).clamp(1, 60);
                    tokio::time::sleep(Duration::from_secs(retry)).await;
                }
            }
        }
    })
}

/// Reads an operator's certificate files again whenever `fired` fires
/// (`SIGHUP`): a certificate renewed outside kcred is served without a
/// restart. Files that do not load are logged and the certificate in
/// force stays.
pub fn spawn_reload_on_signal(
    cert: Arc<ServingCert>,
    mut fired: tokio::sync::watch::Receiver<()>,
    expiry: IntGauge,
    read: impl Fn() -> Result<PemPair, String> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while fired.changed().await.is_ok() {
            match read().and_then(|pair| cert.replace(&pair)) {
                Ok(()) => {
                    let (_, not_after) = cert.validity();
                    expiry.set(not_after);
                    tracing::info!(not_after, "serving certificate reloaded from its files");
                }
                Err(e) => tracing::error!(
                    error = %e,
                    "serving certificate files not reloaded; keeping the certificate in force"
                ),
            }
        }
    })
}

/// When a certificate put in force at `from` and valid until `not_after`
/// is renewed.
fn renewal_due(from: i64, not_after: i64, refresh_fraction: f64) -> i64 {
    let life = not_after.saturating_sub(from).max(0);
    // Whole seconds are precise enough for lifetimes of a minute and more.
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    let into = (life as f64 * refresh_fraction) as i64;
    from.saturating_add(into)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::issuers::ca::CertificateAuthority;

    #[tokio::test]
    async fn a_due_certificate_is_replaced_in_place_and_its_expiry_exported() {
        let ca = CertificateAuthority::generate("test CA", Duration::from_secs(86_400)).unwrap();
        let issue = move || {
            ca.issue(&["controller.test".to_string()], Duration::from_secs(60))
                .map(|c| (c.cert_pem, c.key_pem))
                .map_err(|e| e.to_string())
        };
        let cert = ServingCert::new(&issue().unwrap()).unwrap();
        let first = cert.leaf();
        let expiry = IntGauge::new("expiry", "expiry").unwrap();
        // Due 3 s after it was put in force (5% of 60 s).
        let task = spawn_renewal(Arc::clone(&cert), 0.05, expiry.clone(), issue);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while cert.leaf() == first {
            assert!(std::time::Instant::now() < deadline, "never renewed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        task.abort();
        let (not_before, not_after) = cert.validity();
        assert!(not_after - not_before >= 60, "{not_before}..{not_after}");
        assert_eq!(
            expiry.get(),
            not_after,
            "the gauge follows the new certificate"
        );
    }

    #[test]
    fn renewal_is_due_after_the_refresh_fraction_of_the_validity() {
        assert_eq!(renewal_due(1000, 1300, 2.0 / 3.0), 1200);
        assert_eq!(renewal_due(0, 90, 0.5), 45);
        assert_eq!(
            renewal_due(100, 50, 0.5),
            100,
            "an inverted validity is due at once"
        );
    }
}
