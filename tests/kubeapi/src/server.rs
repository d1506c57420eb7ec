//! The server: routes, the bearer-token check, and the TLS listener that
//! a test can stop and start again on the same port (an API outage).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::status::ApiError;
use crate::store::Store;
use crate::tls::{ServerIdentity, write_kubeconfig};
use crate::tokens::Tokens;
use crate::{Error, discovery, objects, pods, tokens};

/// What every request handler shares.
pub struct Shared {
    /// Objects and history.
    pub store: Store,
    /// Minted service-account tokens.
    pub tokens: Tokens,
    /// Bumped to end every open watch.
    pub cut: watch::Sender<u64>,
    /// How often watches with bookmarks get one.
    pub bookmark_every: Duration,
    token: String,
}

/// Which context name the kubeconfig uses.
pub const CONTEXT: &str = "kcred-test";

/// A running test API server (HTTPS on 127.0.0.1).
pub struct KubeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    ca_pem: String,
    dir: tempfile::TempDir,
    serving: Mutex<Option<JoinHandle<()>>>,
}

fn routes(shared: Arc<Shared>) -> Router {
    use objects::{create, delete, get as get_one, list, patch, replace};
    let one_pod = get(get_one::<Pod>)
        .delete(delete::<Pod>)
        .put(replace::<Pod>)
        .patch(patch::<Pod>);
    let one_node = get(get_one::<Node>)
        .delete(delete::<Node>)
        .put(replace::<Node>)
        .patch(patch::<Node>);
    Router::new()
        .route("/version", get(discovery::version))
        .route("/api", get(discovery::api))
        .route("/api/v1", get(discovery::core_v1))
        .route("/apis", get(discovery::groups))
        .route(
            "/apis/authentication.k8s.io/v1",
            get(discovery::authentication_v1),
        )
        .route("/api/v1/pods", get(list::<Pod>))
        .route(
            "/api/v1/namespaces/{ns}/pods",
            get(list::<Pod>).post(pods::create_request),
        )
        .route("/api/v1/namespaces/{ns}/pods/{name}", one_pod)
        .route("/api/v1/nodes", get(list::<Node>).post(create::<Node>))
        .route("/api/v1/nodes/{name}", one_node)
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            post(tokens::create_review),
        )
        .route(
            "/apis/admissionregistration.k8s.io/v1",
            get(discovery::admissionregistration_v1),
        )
        .route(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            get(list::<MutatingWebhookConfiguration>).post(create::<MutatingWebhookConfiguration>),
        )
        .route(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}",
            get(get_one::<MutatingWebhookConfiguration>)
                .delete(delete::<MutatingWebhookConfiguration>)
                .put(replace::<MutatingWebhookConfiguration>)
                .patch(patch::<MutatingWebhookConfiguration>),
        )
        .route(
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
            get(list::<ValidatingWebhookConfiguration>)
                .post(create::<ValidatingWebhookConfiguration>),
        )
        .route(
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{name}",
            get(get_one::<ValidatingWebhookConfiguration>)
                .delete(delete::<ValidatingWebhookConfiguration>)
                .put(replace::<ValidatingWebhookConfiguration>)
                .patch(patch::<ValidatingWebhookConfiguration>),
        )
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            require_token,
        ))
        .with_state(shared)
}

async fn require_token(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == shared.token);
    if ok {
        next.run(req).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

impl KubeApi {
    /// Starts a server on a free loopback port, with a fresh CA and a
    /// kubeconfig for it.
    pub async fn start() -> Result<KubeApi, Error> {
        let identity = ServerIdentity::generate()?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::Io(format!("bind: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Io(e.to_string()))?;
        let token: [u8; 24] = rand::random();
        let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
        let shared = Arc::new(Shared {
            store: Store::default(),
            tokens: Tokens::default(),
            cut: watch::channel(0).0,
            bookmark_every: Duration::from_secs(1),
            token: token.clone(),
        });
        let dir = tempfile::tempdir().map_err(|e| Error::Io(e.to_string()))?;
        write_kubeconfig(
            &dir.path().join("kubeconfig"),
            &format!("https://{addr}"),
            &identity.ca_pem,
            &token,
            CONTEXT,
        )?;
        let api = KubeApi {
            acceptor: identity.acceptor(),
            ca_pem: identity.ca_pem.clone(),
            shared,
            addr,
            dir,
            serving: Mutex::new(None),
        };
        api.serve_on(listener);
        Ok(api)
    }

    fn serve_on(&self, listener: TcpListener) {
        let task = serve_tls(
            listener,
            self.acceptor.clone(),
            routes(Arc::clone(&self.shared)),
        );
        let mut serving = match self.serving.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        if let Some(old) = serving.replace(task) {
            old.abort();
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A kubeconfig (context [`CONTEXT`]) for this server.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The CA certificate clients trust (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The objects, for tests to create, change and delete directly.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Minted tokens, for tests to mint pod-bound tokens.
    pub fn tokens(&self) -> &Tokens {
        &self.shared.tokens
    }

    /// Ends every open watch stream (clients resume from their version).
    pub fn cut_watches(&self) {
        self.shared.cut.send_modify(|g| *g += 1);
    }

    /// Stops serving: the port closes and every connection drops. Objects
    /// and history stay.
    pub fn stop(&self) {
        let mut serving = match self.serving.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        if let Some(task) = serving.take() {
            task.abort();
        }
        self.cut_watches();
    }

    /// Serves again on the same port after [`KubeApi::stop`].
    pub async fn restart(&self) -> Result<(), Error> {
        self.stop();
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    tracing::debug!(error = %e, "port not free yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(Error::Io(format!("rebind {}: {e}", self.addr))),
            }
        };
        self.serve_on(listener);
        Ok(())
    }

    /// Where the kubeconfig and other files live.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves `router` over TLS (HTTP/1.1) on `listener` until the returned
/// task is aborted; aborting drops every connection. Tests use it for the
/// webhooks they register, too.
pub fn serve_tls(listener: TcpListener, acceptor: TlsAcceptor, router: Router) -> JoinHandle<()> {
    tokio::spawn(accept_loop(listener, acceptor, router))
}

/// Accepts connections until aborted; aborting drops every connection.
async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, router: Router) {
    let mut connections = JoinSet::new();
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        connections.spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}
