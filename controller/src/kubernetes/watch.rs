//! One list-then-watch loop, for any kind kcred follows.
//!
//! The loop lists (page by page, converting each object at once into the
//! few fields kcred keeps), replaces the whole view with the list, then
//! watches from the list's `resourceVersion`, following bookmarks. A
//! dropped watch resumes from the last version seen; `410 Gone` (the
//! version was compacted away) means events may be lost, so the loop
//! lists again and the replace announces whatever vanished meanwhile,
//! deletions included.
//!
//! kube-rs's `watcher` does the same list/watch/re-list dance, but hides
//! bookmarks and connection state; this loop is written out so that the
//! view can say when it may be behind ([`View::set_stale`]) and the
//! metrics can say by how much:
//!
//! - `kcred_kube_watch_synced{resource}`: 1 while a watch is open on a
//!   complete list, 0 while listing or disconnected;
//! - `kcred_kube_watch_last_event_timestamp_seconds{resource}`: when the
//!   API server was last heard from (events and bookmarks), so lag is
//!   `time() - that`;
//! - `kcred_kube_watch_restarts_total{resource,reason}`: re-lists and
//!   reconnects, by reason (`expired`, `disconnected`, `list_failed`,
//!   `client`).

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::core::Resource;
use serde::de::DeserializeOwned;

use super::KubeSource;
use crate::metrics::Metrics;

/// Server-side length of one watch request (the API server ends it then
/// and the loop resumes from the last version).
const WATCH_SECS: u32 = 290;
/// A watch silent for this long (no event, no bookmark, no end) is a dead
/// connection.
const SILENCE: Duration = Duration::from_secs(WATCH_SECS as u64 + 30);
/// Objects per list page.
const PAGE: u32 = 500;

/// Where a watch keeps what it learns: only the fields kcred needs.
pub trait View: Send + Sync + 'static {
    /// The API kind watched.
    type Object: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static;
    /// What the view keeps of one object.
    type Entry: Send;
    /// A complete list as it is read, each page's entries added as the
    /// page arrives (the pod view keeps them compact at once).
    type List: Default + Extend<Self::Entry> + Send;
    /// The resource name, for logs and metrics.
    const RESOURCE: &'static str;
    /// Keeps what matters of `object` (`None`: an object to ignore, such
    /// as one without a name).
    fn entry(object: Self::Object) -> Option<Self::Entry>;
    /// A complete list replaces the view.
    fn replace_all(&self, list: Self::List);
    /// An object was added or changed.
    fn upsert(&self, entry: Self::Entry);
    /// An object was deleted (its last state).
    fn remove(&self, entry: Self::Entry);
    /// The view may be behind the cluster (true) or follows it (false).
    fn set_stale(&self, stale: bool);
}

/// Runs the list/watch loop of `view` until the task is aborted.
pub async fn run<V: View>(source: KubeSource, view: V, metrics: Arc<Metrics>) {
    let m = WatchMetrics {
        metrics,
        resource: V::RESOURCE,
    };
    view.set_stale(true);
    m.synced(false);
    let mut failures = 0u32;
    let client = loop {
        match source.client().await {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(resource = V::RESOURCE, error = %e, "cannot build a Kubernetes client");
                m.restart("client");
                tokio::time::sleep(backoff(&mut failures)).await;
            }
        }
    };
    let api: Api<V::Object> = Api::all(client);
    let mut failures = 0u32;
    loop {
        view.set_stale(true);
        m.synced(false);
        let version = match list_all::<V>(&api).await {
            Ok((list, n, version)) => {
                view.replace_all(list);
                m.heard();
                tracing::info!(resource = V::RESOURCE, objects = n, %version, "listed");
                failures = 0;
                version
            }
            Err(e) => {
                tracing::warn!(resource = V::RESOURCE, error = %e, "list failed; retrying");
                m.restart("list_failed");
                tokio::time::sleep(backoff(&mut failures)).await;
                continue;
            }
        };
        follow(&api, &view, &m, version).await;
        m.restart("expired");
        tracing::info!(resource = V::RESOURCE, "watch expired; listing again");
    }
}

/// Lists every object, page by page, keeping only entries: the list, how
/// many entries it got and the list's version.
async fn list_all<V: View>(api: &Api<V::Object>) -> Result<(V::List, usize, String), kube::Error> {
    let mut list = V::List::default();
    let mut n = 0;
    let mut version = None;
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(PAGE);
        if let Some(t) = &token {
            params = params.continue_token(t);
        }
        let page = api.list(&params).await?;
        // Every page of one list is read at the first page's version.
        version.get_or_insert_with(|| page.metadata.resource_version.clone().unwrap_or_default());
        list.extend(
            page.items
                .into_iter()
                .filter_map(V::entry)
                .inspect(|_| n += 1),
        );
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok((list, n, version.unwrap_or_default()));
        }
    }
}

/// Watches from `version`, resuming after dropped connections, until the
/// version is expired (then the caller lists again).
async fn follow<V: View>(api: &Api<V::Object>, view: &V, m: &WatchMetrics, mut version: String) {
    let mut failures = 0u32;
    loop {
        let params = WatchParams::default().timeout(WATCH_SECS);
        let stream = match api.watch(&params, &version).await {
            Ok(s) => s,
            Err(kube::Error::Api(e)) if e.code == 410 => return,
            Err(e) => {
                tracing::warn!(resource = V::RESOURCE, error = %e, "watch failed; retrying");
                view.set_stale(true);
                m.synced(false);
                m.restart("disconnected");
                tokio::time::sleep(backoff(&mut failures)).await;
                continue;
            }
        };
        failures = 0;
        view.set_stale(false);
        m.synced(true);
        m.heard();
        let mut stream = std::pin::pin!(stream);
        loop {
            let event = match tokio::time::timeout(SILENCE, stream.next()).await {
                Ok(Some(Ok(event))) => event,
                // The server ended this watch (its timeout): resume.
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    tracing::warn!(resource = V::RESOURCE, error = %e, "watch broke; resuming");
                    view.set_stale(true);
                    m.synced(false);
                    m.restart("disconnected");
                    break;
                }
                Err(_) => {
                    tracing::warn!(resource = V::RESOURCE, "watch silent too long; resuming");
                    view.set_stale(true);
                    m.synced(false);
                    m.restart("disconnected");
                    break;
                }
            };
            m.heard();
            match event {
                WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                    advance(&mut version, &o);
                    if let Some(e) = V::entry(o) {
                        view.upsert(e);
                    }
                }
                WatchEvent::Deleted(o) => {
                    advance(&mut version, &o);
                    if let Some(e) = V::entry(o) {
                        view.remove(e);
                    }
                }
                WatchEvent::Bookmark(b) => version = b.metadata.resource_version,
                WatchEvent::Error(s) if s.code == 410 => return,
                WatchEvent::Error(s) => {
                    tracing::warn!(resource = V::RESOURCE, status = ?s, "watch error; resuming");
                    m.restart("disconnected");
                    tokio::time::sleep(backoff(&mut failures)).await;
                    break;
                }
            }
        }
    }
}

fn advance<K: Resource>(version: &mut String, object: &K) {
    if let Some(v) = &object.meta().resource_version {
        version.clone_from(v);
    }
}

/// 250 ms doubling up to 5 s.
fn backoff(failures: &mut u32) -> Duration {
    let d = Duration::from_millis(250) * 2u32.saturating_pow((*failures).min(5));
    *failures = failures.saturating_add(1);
    d.min(Duration::from_secs(5))
}

struct WatchMetrics {
    metrics: Arc<Metrics>,
    resource: &'static str,
}

impl WatchMetrics {
    fn synced(&self, yes: bool) {
        self.metrics
            .kube_watch_synced
            .with_label_values(&[self.resource])
            .set(i64::from(yes));
    }

    fn heard(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.metrics
            .kube_watch_last_event
            .with_label_values(&[self.resource])
            .set(i64::try_from(now).unwrap_or(i64::MAX));
    }

    fn restart(&self, reason: &str) {
        self.metrics
            .kube_watch_restarts
            .with_label_values(&[self.resource, reason])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_stops_at_five_seconds() {
        let mut n = 0;
        let steps: Vec<_> = (0..8).map(|_| backoff(&mut n).as_millis()).collect();
        assert_eq!(steps, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
    }
}
