//! A controller double: a real tonic NodeCredentials server on a loopback
//! socket, answering with scripted bundles and statuses.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use kcred_proto::kcred::v1::node_credentials_server::{NodeCredentials, NodeCredentialsServer};
use kcred_proto::kcred::v1::volume_result::Outcome;
use kcred_proto::kcred::v1::{
    Bundle, BundleFile, FetchBundleRequest, FetchBundlesRequest, FetchBundlesResponse,
    HeartbeatRequest, HeartbeatResponse, Reason, VolumeRefusal, VolumeResult, VolumeUpdate,
    WatchUpdatesRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::support::lock::lock;

/// One FetchBundle call as the double saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub volume_id: String,
    pub refresh: bool,
}

#[derive(Default)]
struct Script {
    /// The answer to every fetch.
    steady: Option<Result<Bundle, Status>>,
    fetches: Vec<Fetch>,
    /// Whether FetchBundles is served (else: an older controller).
    batches: bool,
    /// The volumes of every FetchBundles call.
    batch_calls: Vec<Vec<Fetch>>,
    /// Volumes a batch refuses, with this reason.
    refused: std::collections::HashMap<String, Reason>,
    /// Whether the Heartbeats stream is served (else: an older controller,
    /// or `stream_refusal`).
    streams: bool,
    /// What an attempt to open a stream gets when streams are not served
    /// (default: UNIMPLEMENTED, an older controller).
    stream_refusal: Option<Status>,
    /// Attempts to open a heartbeat stream so far, and those that opened.
    stream_attempts: usize,
    streams_opened: usize,
    /// Each heartbeat stream ends after this many answers (as the
    /// controller ends streams that reached their age).
    stream_answers: Option<usize>,
    /// The volume ids each heartbeat reported (by call or on a stream).
    heartbeats: Vec<Vec<String>>,
    heartbeat: HeartbeatResponse,
    updates: Vec<mpsc::UnboundedSender<Result<VolumeUpdate, Status>>>,
    /// Fetches are held this long before they are answered (a controller
    /// that is reached but does not answer).
    stall: Option<std::time::Duration>,
}

/// The double's handle: script answers, read what it was asked.
#[derive(Clone, Default)]
pub struct Controller {
    script: Arc<Mutex<Script>>,
}

/// A bundle of one file `secret` holding `content`, generation `content`.
pub fn bundle(content: &str, refresh_after_unix: i64) -> Bundle {
    Bundle {
        files: vec![BundleFile {
            name: "secret".into(),
            content: content.as_bytes().to_vec(),
            mode: 0o400,
        }],
        uid: 1500,
        gid: 1500,
        generation: content.into(),
        refresh_after_unix,
    }
}

impl Controller {
    /// Serves on 127.0.0.1 (a free port); returns the endpoint URL.
    pub async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let svc = NodeCredentialsServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }

    /// Every later fetch answers `answer`.
    /// Holds every fetch `stall` before answering it.
    pub fn stall(&self, stall: std::time::Duration) {
        lock(&self.script).stall = Some(stall);
    }

    pub fn always(&self, answer: Result<Bundle, Status>) {
        lock(&self.script).steady = Some(answer);
    }

    /// Serves FetchBundles from now on, as a current controller does.
    pub fn serve_batches(&self) {
        lock(&self.script).batches = true;
    }

    /// Batches refuse `volume_id` for `reason`.
    pub fn refuse_in_batches(&self, volume_id: &str, reason: Reason) {
        lock(&self.script)
            .refused
            .insert(volume_id.to_string(), reason);
    }

    /// The volumes of every FetchBundles call so far.
    pub fn batch_calls(&self) -> Vec<Vec<Fetch>> {
        lock(&self.script).batch_calls.clone()
    }

    /// Serves the Heartbeats stream from now on, as a current controller
    /// does.
    pub fn serve_heartbeat_streams(&self) {
        lock(&self.script).streams = true;
    }

    /// Ends each heartbeat stream after `n` answers.
    pub fn end_heartbeat_streams_after(&self, n: usize) {
        lock(&self.script).stream_answers = Some(n);
    }

    /// Refuses heartbeat streams with `status` (a proxy without streams,
    /// a node at its cap).
    pub fn refuse_heartbeat_streams(&self, status: Status) {
        lock(&self.script).stream_refusal = Some(status);
    }

    /// How many times the driver tried to open a heartbeat stream.
    pub fn heartbeat_stream_attempts(&self) -> usize {
        lock(&self.script).stream_attempts
    }

    /// How many heartbeat streams were opened so far.
    pub fn heartbeat_streams_opened(&self) -> usize {
        lock(&self.script).streams_opened
    }

    /// What the next heartbeats answer.
    pub fn heartbeat_answers(&self, resp: HeartbeatResponse) {
        lock(&self.script).heartbeat = resp;
    }

    /// Pushes an update to every follower of the update stream.
    pub fn push(&self, update: VolumeUpdate) -> usize {
        let s = lock(&self.script);
        s.updates
            .iter()
            .filter(|tx| tx.send(Ok(update.clone())).is_ok())
            .count()
    }

    /// The volume ids of every heartbeat seen so far.
    pub fn heartbeats(&self) -> Vec<Vec<String>> {
        lock(&self.script).heartbeats.clone()
    }

    /// The fetches seen so far.
    pub fn fetches(&self) -> Vec<Fetch> {
        lock(&self.script).fetches.clone()
    }
}

#[tonic::async_trait]
impl NodeCredentials for Controller {
    async fn fetch_bundle(
        &self,
        request: Request<FetchBundleRequest>,
    ) -> Result<Response<Bundle>, Status> {
        let req = request.into_inner();
        let stall = lock(&self.script).stall;
        if let Some(stall) = stall {
            tokio::time::sleep(stall).await;
        }
        let mut s = lock(&self.script);
        s.fetches.push(Fetch {
            volume_id: req.volume_id,
            refresh: req.refresh,
        });
        s.steady
            .clone()
            .unwrap_or_else(|| Err(Status::internal("no answer scripted")))
            .map(Response::new)
    }

    async fn fetch_bundles(
        &self,
        request: Request<FetchBundlesRequest>,
    ) -> Result<Response<FetchBundlesResponse>, Status> {
        let req = request.into_inner();
        let stall = lock(&self.script).stall;
        if let Some(stall) = stall {
            tokio::time::sleep(stall).await;
        }
        let mut s = lock(&self.script);
        if !s.batches {
            return Err(Status::unimplemented("an older controller"));
        }
        s.batch_calls.push(
            req.volumes
                .iter()
                .map(|v| Fetch {
                    volume_id: v.volume_id.clone(),
                    refresh: v.refresh,
                })
                .collect(),
        );
        let bundle = s
            .steady
            .clone()
            .unwrap_or_else(|| Err(Status::internal("no answer scripted")))?;
        let volumes = req
            .volumes
            .iter()
            .map(|v| VolumeResult {
                volume_id: v.volume_id.clone(),
                outcome: Some(match s.refused.get(&v.volume_id) {
                    Some(reason) => Outcome::Refused(VolumeRefusal {
                        reason: *reason as i32,
                        message: "refused in a batch".into(),
                    }),
                    None => Outcome::Bundle(0),
                }),
            })
            .collect();
        Ok(Response::new(FetchBundlesResponse {
            bundles: vec![bundle],
            volumes,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let mut s = lock(&self.script);
        s.heartbeats.push(request.into_inner().volume_ids);
        Ok(Response::new(s.heartbeat.clone()))
    }

    type HeartbeatsStream =
        Pin<Box<dyn Stream<Item = Result<HeartbeatResponse, Status>> + Send + 'static>>;

    async fn heartbeats(
        &self,
        request: Request<Streaming<HeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatsStream>, Status> {
        let answers_per_stream = {
            let mut s = lock(&self.script);
            s.stream_attempts += 1;
            if !s.streams {
                return Err(s
                    .stream_refusal
                    .clone()
                    .unwrap_or_else(|| Status::unimplemented("an older controller")));
            }
            s.streams_opened += 1;
            s.stream_answers.unwrap_or(usize::MAX)
        };
        let script = Arc::clone(&self.script);
        let answers = StreamExt::map(request.into_inner(), move |beat| {
            let mut s = lock(&script);
            s.heartbeats.push(beat?.volume_ids);
            Ok(s.heartbeat.clone())
        });
        Ok(Response::new(Box::pin(answers.take(answers_per_stream))))
    }

    type WatchUpdatesStream =
        Pin<Box<dyn Stream<Item = Result<VolumeUpdate, Status>> + Send + 'static>>;

    async fn watch_updates(
        &self,
        _: Request<WatchUpdatesRequest>,
    ) -> Result<Response<Self::WatchUpdatesStream>, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.script).updates.push(tx);
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}
