//! Watch streams: newline-delimited JSON events on one long response.
//!
//! `?watch=true&resourceVersion=N` replays the changes after N and then
//! follows live ones; without a version (or with `0`) the stream opens
//! with an `ADDED` event per existing object. `allowWatchBookmarks=true`
//! adds `BOOKMARK` events carrying the version the watcher has seen up
//! to. A compacted version gets one `ERROR` event with a `Status` of code
//! 410, as the real server answers, and the stream ends. Streams also end
//! at `timeoutSeconds`, and when the test cuts them.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::store::{Change, Replay, Store, Stored, event_line};

/// What the client asked of its watch.
#[derive(Debug, Clone, Default)]
pub struct WatchParams {
    /// Start after this version; `None` starts with the current objects.
    pub resource_version: Option<u64>,
    /// Send bookmarks.
    pub bookmarks: bool,
    /// End the stream after this long.
    pub timeout: Option<Duration>,
}

/// Where a watch stream gets what it sends.
pub struct WatchSource<'a> {
    /// The objects and their history.
    pub store: &'a Store,
    /// Changes when the test cuts every open watch.
    pub cut: watch::Receiver<u64>,
    /// How often bookmarks are sent.
    pub bookmark_every: Duration,
}

/// Starts a watch of kind `K` (in `namespace`, if given).
pub fn watch<K: Stored>(
    src: WatchSource<'_>,
    namespace: Option<String>,
    params: WatchParams,
) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let (initial, changes, seen) = match params.resource_version {
        None => {
            let (lines, rv, changes) = src.store.snapshot::<K>(namespace.as_deref());
            (lines, changes, rv)
        }
        Some(rv) => match src.store.replay_from(rv) {
            Replay::Expired(err) => {
                let line = event_line("ERROR", &err.status());
                tokio::spawn(async move {
                    let _ = tx.send(Ok(Bytes::from(line))).await;
                });
                return stream_response(rx);
            }
            Replay::From(past, changes) => {
                let seen = past.iter().map(|c| c.rv).max().unwrap_or(rv);
                let lines = past
                    .iter()
                    .filter(|c| wanted::<K>(c, namespace.as_deref()))
                    .map(|c| c.line.clone())
                    .collect();
                (lines, changes, seen)
            }
        },
    };
    let follow = Follow {
        namespace,
        params,
        cut: src.cut,
        bookmark_every: src.bookmark_every,
        seen,
    };
    tokio::spawn(follow.run::<K>(initial, changes, tx));
    stream_response(rx)
}

fn wanted<K: Stored>(c: &Change, namespace: Option<&str>) -> bool {
    c.plural == K::URL_PATH_SEGMENT && namespace.is_none_or(|n| n == c.namespace)
}

fn stream_response(rx: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Response {
    let mut resp = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

struct Follow {
    namespace: Option<String>,
    params: WatchParams,
    cut: watch::Receiver<u64>,
    bookmark_every: Duration,
    /// The newest version this stream has passed on (or skipped).
    seen: u64,
}

impl Follow {
    async fn run<K: Stored>(
        mut self,
        initial: Vec<Vec<u8>>,
        mut changes: broadcast::Receiver<Arc<Change>>,
        tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) {
        for line in initial {
            if tx.send(Ok(Bytes::from(line))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(
            self.params
                .timeout
                .unwrap_or(Duration::from_secs(365 * 86_400)),
        );
        tokio::pin!(deadline);
        let mut bookmarks = tokio::time::interval(self.bookmark_every);
        bookmarks.tick().await;
        self.cut.borrow_and_update();
        loop {
            let line = tokio::select! {
                // A cut or the deadline wins over pending changes: those
                // go to the watch the client opens next.
                biased;
                _ = self.cut.changed() => return,
                _ = &mut deadline => return,
                _ = bookmarks.tick(), if self.params.bookmarks => bookmark::<K>(self.seen),
                change = changes.recv() => match change {
                    Ok(c) if c.rv <= self.seen => continue,
                    Ok(c) => {
                        self.seen = c.rv;
                        if !wanted::<K>(&c, self.namespace.as_deref()) {
                            continue;
                        }
                        c.line.clone()
                    }
                    // Fell behind or the server is going away: end the
                    // stream, the client resumes from what it saw.
                    Err(_) => return,
                },
            };
            if tx.send(Ok(Bytes::from(line))).await.is_err() {
                return;
            }
        }
    }
}

fn bookmark<K: Stored>(rv: u64) -> Vec<u8> {
    event_line(
        "BOOKMARK",
        &serde_json::json!({
            "kind": K::KIND,
            "apiVersion": K::API_VERSION,
            "metadata": { "resourceVersion": rv.to_string() },
        }),
    )
}
