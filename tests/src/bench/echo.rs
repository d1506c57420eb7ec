//! The peer: a tonic echo over TLS (unary, and a stream answering each
//! message), on the same gRPC stack and service definition as the
//! controller but doing nothing, so the gap between it and the controller
//! is kcred's own work.

use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, Instant};

use kcred_proto::kcred::v1::node_credentials_client::NodeCredentialsClient;
use kcred_proto::kcred::v1::node_credentials_server::{NodeCredentials, NodeCredentialsServer};
use kcred_proto::kcred::v1::{
    Bundle, FetchBundleRequest, FetchBundlesRequest, FetchBundlesResponse, HeartbeatRequest,
    HeartbeatResponse, VolumeUpdate, WatchUpdatesRequest,
};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig,
};
use tonic::{Request, Response, Status, Streaming};

/// The TLS name the echo serves under.
pub const ECHO_HOST: &str = "echo.kcred.test";

/// Answers `Heartbeat`, and each message of `Heartbeats`, with an empty
/// response; nothing else.
struct Echo;

#[tonic::async_trait]
impl NodeCredentials for Echo {
    type WatchUpdatesStream = Pin<Box<dyn Stream<Item = Result<VolumeUpdate, Status>> + Send>>;
    type HeartbeatsStream = Pin<Box<dyn Stream<Item = Result<HeartbeatResponse, Status>> + Send>>;

    async fn fetch_bundle(
        &self,
        _: Request<FetchBundleRequest>,
    ) -> Result<Response<Bundle>, Status> {
        Err(Status::unimplemented("echo"))
    }

    async fn fetch_bundles(
        &self,
        _: Request<FetchBundlesRequest>,
    ) -> Result<Response<FetchBundlesResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }

    async fn heartbeat(
        &self,
        _: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        Ok(Response::new(HeartbeatResponse::default()))
    }

    async fn heartbeats(
        &self,
        request: Request<Streaming<HeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatsStream>, Status> {
        let answers = StreamExt::map(request.into_inner(), |beat| {
            beat.map(|_| HeartbeatResponse::default())
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn watch_updates(
        &self,
        _: Request<WatchUpdatesRequest>,
    ) -> Result<Response<Self::WatchUpdatesStream>, Status> {
        Err(Status::unimplemented("echo"))
    }
}

/// A self-signed certificate and key (PEM) for [`ECHO_HOST`].
pub fn self_signed() -> anyhow::Result<(String, String)> {
    let ck = rcgen::generate_simple_self_signed(vec![ECHO_HOST.to_string()])?;
    Ok((ck.cert.pem(), ck.signing_key.serialize_pem()))
}

/// Serves the echo on `listener` until the process ends, with
/// `TCP_NODELAY` on accepted sockets as the controller does.
pub async fn serve(listener: tokio::net::TcpListener, cert: &str, key: &str) -> anyhow::Result<()> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let incoming = StreamExt::map(incoming, |s| {
        s.inspect(|s| {
            let _ = s.set_nodelay(true);
        })
    });
    Server::builder()
        .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))?
        .add_service(NodeCredentialsServer::new(Echo))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

/// Serves the echo on `listener` as a process of its own: writes its
/// certificate and then its address into `dir` (the address last, by
/// rename), where [`served_in`] finds them.
pub async fn serve_in(dir: &Path, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let (cert, key) = self_signed()?;
    std::fs::write(dir.join("echo.crt"), &cert)?;
    std::fs::write(
        dir.join("echo.addr.tmp"),
        listener.local_addr()?.to_string(),
    )?;
    std::fs::rename(dir.join("echo.addr.tmp"), dir.join("echo.addr"))?;
    serve(listener, &cert, &key).await
}

/// The address and certificate of the echo serving in `dir`
/// ([`serve_in`]), once it does, waiting at most `patience`.
pub async fn served_in(dir: &Path, patience: Duration) -> anyhow::Result<(String, String)> {
    let deadline = Instant::now() + patience;
    while !dir.join("echo.addr").exists() {
        if Instant::now() > deadline {
            anyhow::bail!("no echo serving in {}", dir.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((
        std::fs::read_to_string(dir.join("echo.addr"))?,
        std::fs::read_to_string(dir.join("echo.crt"))?,
    ))
}

/// A TLS client of the echo at `addr`, trusting `cert`.
pub async fn client(addr: &str, cert: &str) -> anyhow::Result<NodeCredentialsClient<Channel>> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(cert))
        .domain_name(ECHO_HOST);
    let channel = Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(NodeCredentialsClient::new(channel))
}

/// A heartbeat stream opened on the echo: one message each way per beat,
/// as a node's stream to the controller.
pub struct EchoStream {
    out: tokio::sync::mpsc::Sender<HeartbeatRequest>,
    answers: Streaming<HeartbeatResponse>,
}

impl EchoStream {
    /// Opens a stream on `client` with `first` as its first message.
    pub async fn open(
        client: &mut NodeCredentialsClient<Channel>,
        first: HeartbeatRequest,
    ) -> anyhow::Result<Self> {
        let (out, rx) = tokio::sync::mpsc::channel(2);
        out.send(first).await?;
        let mut answers = client
            .heartbeats(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        answers
            .message()
            .await?
            .ok_or_else(|| anyhow::anyhow!("the echo ended the stream"))?;
        Ok(EchoStream { out, answers })
    }

    /// One beat: a message out, its answer back.
    pub async fn beat(&mut self, req: HeartbeatRequest) -> anyhow::Result<()> {
        self.out.send(req).await?;
        self.answers
            .message()
            .await?
            .ok_or_else(|| anyhow::anyhow!("the echo ended the stream"))?;
        Ok(())
    }
}
