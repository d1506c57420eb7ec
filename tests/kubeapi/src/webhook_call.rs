//! One call to an admission webhook: an HTTPS `POST` of JSON to
//! `clientConfig.url`, trusting only `clientConfig.caBundle`, within the
//! webhook's timeout, as the API server makes it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Uri, header};
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// Largest webhook answer read.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Posts `body` to `url`, trusting `ca_pem`; returns the answer's body.
pub async fn post_json(
    url: &str,
    ca_pem: &[u8],
    timeout: Duration,
    body: Vec<u8>,
) -> Result<Vec<u8>, String> {
    tokio::time::timeout(timeout, post(url, ca_pem, body))
        .await
        .map_err(|_| format!("Post {url:?}: context deadline exceeded"))?
}

async fn post(url: &str, ca_pem: &[u8], body: Vec<u8>) -> Result<Vec<u8>, String> {
    let fail = |e: &dyn std::fmt::Display| format!("Post {url:?}: {e}");
    let uri: Uri = url.parse().map_err(|e| fail(&e))?;
    if uri.scheme_str() != Some("https") {
        return Err(fail(&"webhook URLs must be https"));
    }
    let host = uri.host().ok_or_else(|| fail(&"no host"))?.to_string();
    let port = uri.port_u16().unwrap_or(443);
    let path = uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());

    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(cert.map_err(|e| fail(&e))?)
            .map_err(|e| fail(&e))?;
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name =
        ServerName::try_from(host.trim_matches(['[', ']']).to_string()).map_err(|e| fail(&e))?;
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| fail(&e))?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| fail(&format!("tls: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| fail(&e))?;
    tokio::spawn(conn);
    let req = Request::post(path)
        .header(header::HOST, format!("{host}:{port}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json")
        .body(Body::from(body))
        .map_err(|e| fail(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| fail(&e))?;
    if !resp.status().is_success() {
        return Err(fail(&format!("status {}", resp.status())));
    }
    let bytes = axum::body::to_bytes(Body::new(resp.into_body()), MAX_BODY)
        .await
        .map_err(|e| fail(&e))?;
    Ok(bytes.to_vec())
}
