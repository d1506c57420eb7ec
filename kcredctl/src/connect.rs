//! Reaching the controller as the caller's Kerberos identity, and turning
//! gRPC failures into advice.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use kcred_auth::grpc::TokenInterceptor;
use kcred_auth::{AuthError, Initiator};
use kcred_proto::kcred::v1::Reason;
use kcred_proto::kcred::v1::admin_client::AdminClient;
use kcred_proto::reason::reason_of;
use tonic::Request;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Response, Status, Streaming};

use crate::cli::Global;
use crate::timeparse::format_duration;
use crate::{Usage, scheme};

/// How each call proves who is calling.
#[derive(Clone)]
pub enum Credentials {
    /// A fresh Kerberos token on every call.
    Kerberos(TokenInterceptor),
    /// The TLS client certificate proves it: nothing to add to calls.
    Certificate,
}

impl Interceptor for Credentials {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        match self {
            Credentials::Kerberos(tokens) => tokens.call(request),
            Credentials::Certificate => Ok(request),
        }
    }
}

/// The Admin client, authenticated by [`Credentials`].
pub type Client = AdminClient<InterceptedService<Channel, Credentials>>;

/// A connected, authenticated client and the per-answer timeout.
pub struct Conn {
    pub client: Client,
    pub timeout: Duration,
}

/// Where the caller's Kerberos identity comes from.
enum Identity {
    /// `--keytab` and `--principal`: for scripts.
    Keytab { keytab: PathBuf, principal: String },
    /// The caller's `kinit` tickets (default cache, `KRB5CCNAME`).
    TicketCache { principal: Option<String> },
}

/// Longest wait for the scheme probe: it only sharpens an error message.
const PROBE_WAIT: Duration = Duration::from_secs(3);

/// Rounds over every `--controller` before giving up.
const ROUNDS: u32 = 3;
/// Wait after a round in which no controller answered (doubles).
const FIRST_BACKOFF: Duration = Duration::from_millis(300);

/// Connects to the first of the `--controller` URLs that answers (several
/// separated by commas: a controller that is down is skipped, with a
/// backoff between rounds) and sets up the caller's identity (for
/// Kerberos: the service ticket), so mistakes show before any call.
pub async fn connect(g: &Global) -> anyhow::Result<Conn> {
    let urls = urls(g)?;
    let mut backoff = FIRST_BACKOFF;
    let mut failed = None;
    for round in 0..ROUNDS {
        if round > 0 {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        for url in &urls {
            match connect_one(g, url).await {
                Ok(conn) => return Ok(conn),
                // A usage mistake is the same on every controller.
                Err(e) if e.downcast_ref::<Usage>().is_some() => return Err(e),
                Err(e) => {
                    if urls.len() > 1 {
                        eprintln!("kcredctl: {e:#}; trying the next controller");
                    }
                    failed = Some(e);
                }
            }
        }
        if urls.len() == 1 {
            break;
        }
    }
    Err(failed.unwrap_or_else(|| anyhow!("no controller answered")))
}

/// The `--controller` URLs, in order.
pub fn urls(g: &Global) -> anyhow::Result<Vec<String>> {
    let urls: Vec<String> = g
        .controller
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect();
    if urls.is_empty() {
        return Err(Usage::new(
            "no controller given: pass --controller URL or set KCRED_CONTROLLER \
             (e.g. https://kcred.example.com:7420)",
        )
        .into());
    }
    Ok(urls)
}

async fn connect_one(g: &Global, url: &str) -> anyhow::Result<Conn> {
    let (host, port) = controller_addr(url)?;
    let https = url.starts_with("https://");
    let certificate = client_certificate(g, https)?;
    let identity = match &certificate {
        Some(_) => None,
        None => Some(identity(g)?),
    };
    let service = match &g.service {
        Some(s) if !s.is_empty() => s.clone(),
        _ => default_service(&host),
    };
    if let Some(advice) = scheme::mismatch(url, &host, port, g.timeout.min(PROBE_WAIT)).await {
        return Err(Usage::new(advice).into());
    }
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| Usage::new(format!("--controller {url:?} is not usable: {e}")))?
        .connect_timeout(g.timeout);
    if https {
        let ca_path = g.ca_cert.as_ref().ok_or_else(|| {
            Usage::new("an https:// controller needs --ca-cert (the controller's CA certificate)")
        })?;
        let ca = std::fs::read(ca_path)
            .with_context(|| format!("cannot read --ca-cert {}", ca_path.display()))?;
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca));
        if let Some(name) = &g.tls_server_name {
            tls = tls.domain_name(name.clone());
        }
        if let Some(pair) = certificate {
            tls = tls.identity(pair);
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| Usage::new(format!("TLS setup failed: {e}")))?;
    }
    let wait = format_duration(g.timeout);
    let channel = tokio::time::timeout(g.timeout, endpoint.connect())
        .await
        .map_err(|_| anyhow!("cannot connect to the controller at {url} within {wait}"))?
        .with_context(|| {
            format!(
                "cannot connect to the controller at {url} (check --controller and that it runs)"
            )
        })?;
    let credentials = match identity {
        None => Credentials::Certificate,
        Some(identity) => {
            let initiator = kerberos(identity, service, g.timeout).await?;
            Credentials::Kerberos(TokenInterceptor::new(Arc::new(initiator)))
        }
    };
    Ok(Conn {
        client: AdminClient::with_interceptor(channel, credentials),
        timeout: g.timeout,
    })
}

/// `--tls-cert` and `--tls-key`, read, when given.
fn client_certificate(
    g: &Global,
    https: bool,
) -> anyhow::Result<Option<tonic::transport::Identity>> {
    let (cert, key) = match (&g.tls_cert, &g.tls_key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => return Err(Usage::new("--tls-cert and --tls-key go together").into()),
    };
    if !https {
        return Err(Usage::new("--tls-cert needs an https:// controller").into());
    }
    if g.keytab.is_some() {
        return Err(Usage::new(
            "--tls-cert and --keytab are two ways to say who you are: pass only one",
        )
        .into());
    }
    let read = |p: &PathBuf, what: &str| {
        std::fs::read(p).with_context(|| format!("cannot read {what} {}", p.display()))
    };
    let cert = read(cert, "--tls-cert")?;
    let key = zeroize::Zeroizing::new(read(key, "--tls-key")?);
    Ok(Some(tonic::transport::Identity::from_pem(
        cert,
        key.as_slice(),
    )))
}

/// A keytab if asked for, else the caller's ticket cache.
fn identity(g: &Global) -> anyhow::Result<Identity> {
    let principal = g.principal.clone().filter(|p| !p.is_empty());
    match (g.keytab.clone(), principal) {
        (Some(keytab), Some(principal)) => Ok(Identity::Keytab { keytab, principal }),
        (Some(_), None) => Err(Usage::new(
            "--keytab needs --principal (or KCRED_PRINCIPAL): the name in the keytab to use, \
             e.g. alice@EXAMPLE.COM",
        )
        .into()),
        (None, principal) => Ok(Identity::TicketCache { principal }),
    }
}

/// The host and port of an `http://` or `https://` URL (default ports 80
/// and 443); anything else is a usage error.
pub fn controller_addr(url: &str) -> anyhow::Result<(String, u16)> {
    let uri: Uri = url.parse().map_err(|e| {
        Usage::new(format!(
            "--controller {url:?} is not a URL ({e}); e.g. http://127.0.0.1:7420"
        ))
    })?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(Usage::new(format!(
                "--controller {url:?} must start with http://, e.g. http://127.0.0.1:7420"
            ))
            .into());
        }
    }
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(Usage::new(format!("--controller {url:?} names no host")).into());
    }
    let default_port = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    Ok((host.to_string(), uri.port_u16().unwrap_or(default_port)))
}

/// `kcred/<host>`: the controller's principal when --service is not given.
pub fn default_service(host: &str) -> String {
    format!("kcred/{host}")
}

/// Sets up the identity and makes one token (hence the service ticket) off
/// the async threads: both may wait on the KDC.
async fn kerberos(
    identity: Identity,
    service: String,
    timeout: Duration,
) -> anyhow::Result<Initiator> {
    let target = service.clone();
    let task = tokio::task::spawn_blocking(move || -> Result<Initiator, AuthError> {
        let initiator = match identity {
            Identity::Keytab { keytab, principal } => {
                Initiator::new(&keytab, &principal, &service)?
            }
            Identity::TicketCache { principal } => {
                Initiator::from_ticket_cache(principal.as_deref(), &service)?
            }
        };
        initiator.token()?;
        Ok(initiator)
    });
    match tokio::time::timeout(timeout, task).await {
        Err(_) => Err(anyhow!(
            "the KDC did not answer within {}; check KRB5_CONFIG and that the KDC is reachable",
            format_duration(timeout)
        )),
        Ok(Err(e)) => Err(anyhow!("the Kerberos setup failed: {e}")),
        Ok(Ok(Err(e))) => Err(explain_auth(e, &target)),
        Ok(Ok(Ok(initiator))) => Ok(initiator),
    }
}

fn explain_auth(e: AuthError, service: &str) -> anyhow::Error {
    match e {
        AuthError::InvalidArgument { .. } => Usage::new(e.to_string()).into(),
        AuthError::Credentials { .. } => anyhow!(
            "cannot get your Kerberos credentials: {e}; check --keytab, --principal and KRB5_CONFIG"
        ),
        AuthError::TicketCache { .. } => anyhow!("cannot use your Kerberos tickets: {e}"),
        AuthError::Initiate { .. } => anyhow!(
            "cannot get a Kerberos ticket for the controller's service {service}: {e}; \
             check --service (default kcred/<controller host>) and KRB5_CONFIG"
        ),
        other => anyhow!(other),
    }
}

/// Awaits a unary call for at most `timeout`, explaining failures.
pub async fn unary<T>(
    timeout: Duration,
    call: impl Future<Output = Result<Response<T>, Status>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(anyhow!(
            "the controller did not answer within {}; try a larger --timeout",
            format_duration(timeout)
        )),
        Ok(Err(status)) => Err(explain(&status)),
        Ok(Ok(response)) => Ok(response.into_inner()),
    }
}

/// The next message of a stream, waiting at most `idle` for it.
pub async fn next<T>(stream: &mut Streaming<T>, idle: Duration) -> anyhow::Result<Option<T>> {
    match tokio::time::timeout(idle, stream.message()).await {
        Err(_) => Err(anyhow!(
            "the controller sent nothing for {}; try a larger --timeout",
            format_duration(idle)
        )),
        Ok(result) => result.map_err(|s| explain(&s)),
    }
}

/// A gRPC failure in words, with what to do about it. The controller's
/// refusals carry a reason (`kcred.v1.Reason`) and are explained by it; a
/// status without one never reached the controller (this client's identity
/// or the network) and is explained by its code.
pub fn explain(status: &Status) -> anyhow::Error {
    let msg = match status.message() {
        "" => format!("{:?}", status.code()),
        m => m.to_string(),
    };
    if let Some(reason) = reason_of(status) {
        let label = reason.label();
        return match reason {
            Reason::Unauthenticated => anyhow!(
                "the controller refused your Kerberos identity: {msg}; check your tickets (klist) \
                 or --keytab/--principal, and --service (the controller's principal)"
            ),
            Reason::NoAdminRole => anyhow!(
                "you have no admin role: {msg}; an operator lists people in auth.operators \
                 (rotate, revoke) or auth.auditors (read)"
            ),
            Reason::RoleForbids => anyhow!(
                "your role cannot do this: {msg}; auditors may read (status, list, audit), \
                 operators may also rotate and revoke"
            ),
            Reason::RequestInvalid => anyhow!("the controller refused the request: {msg}"),
            Reason::VolumeUnknown | Reason::KeyUnknown => anyhow!("not found: {msg}"),
            r if r.is_transient() => {
                anyhow!("the controller cannot do this now ({label}): {msg}; retry later")
            }
            _ => anyhow!("refused ({label}): {msg}"),
        };
    }
    match status.code() {
        Code::Unavailable if std::error::Error::source(status).is_some() => anyhow!(
            "the controller is unreachable: {msg}; check --controller and that it is running"
        ),
        Code::Unavailable | Code::Unauthenticated => anyhow!(
            "no call reached the controller: {msg}; check KRB5_CONFIG, your tickets (klist) \
             or --keytab, --service and --controller"
        ),
        Code::DeadlineExceeded => {
            anyhow!("the controller did not finish in time: {msg}; try a larger --timeout")
        }
        Code::Unimplemented => {
            anyhow!("the controller does not offer this ({msg}); is it older than this kcredctl?")
        }
        code => anyhow!("the call failed ({code:?}): {msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcred_proto::reason::status;

    #[test]
    fn service_defaults_to_kcred_at_the_controller_host() {
        let host = |u: &str| {
            controller_addr(u)
                .map(|(h, _)| h)
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            host("http://kcred.example.com:7420").as_deref(),
            Ok("kcred.example.com")
        );
        assert_eq!(host("http://127.0.0.1:7420/").as_deref(), Ok("127.0.0.1"));
        assert_eq!(host("http://[::1]:7420").as_deref(), Ok("::1"));
        assert_eq!(
            default_service("kcred.example.com"),
            "kcred/kcred.example.com"
        );
    }

    #[test]
    fn https_urls_are_accepted() {
        assert_eq!(
            controller_addr("https://c.example.com:7420").expect("https"),
            ("c.example.com".to_string(), 7420)
        );
        assert_eq!(
            controller_addr("https://c.example.com").expect("https").1,
            443
        );
    }

    #[test]
    fn unusable_urls_are_usage_errors() {
        for url in ["kcred.example.com:7420", "ftp://c", "http://", "::"] {
            let err = controller_addr(url).expect_err(url);
            assert!(err.downcast_ref::<Usage>().is_some(), "{url}: {err}");
        }
    }

    #[test]
    fn refusals_are_explained_by_their_reason_not_their_words() {
        let text = |s: Status| explain(&s).to_string();
        let t = text(status(
            Reason::Unauthenticated,
            "Kerberos token refused: clock skew",
        ));
        assert!(t.starts_with("the controller refused your Kerberos identity: Kerberos token"));
        assert!(t.contains("check your tickets (klist)"), "{t}");
        let t = text(status(Reason::RoleForbids, "alice@R is an auditor"));
        assert!(
            t.starts_with("your role cannot do this: alice@R is an auditor"),
            "{t}"
        );
        let t = text(status(Reason::NoAdminRole, "bob@R has no admin role"));
        assert!(t.contains("auth.operators"), "{t}");
        let t = text(status(Reason::AuditUnavailable, "audit log unavailable"));
        assert!(t.ends_with("retry later"), "{t}");
        let t = text(status(Reason::VolumeUnknown, "no volume csi-1"));
        assert_eq!(t, "not found: no volume csi-1");
        // The same words without a reason never came from the controller.
        let t = text(Status::permission_denied("alice@R is an auditor"));
        assert!(!t.contains("your role"), "{t}");
        let t = text(Status::unavailable("cannot get a Kerberos token: expired"));
        assert!(t.contains("check KRB5_CONFIG"), "{t}");
        assert!(text(Status::internal("")).contains("Internal"));
    }
}
