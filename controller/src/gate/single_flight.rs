//! Single-flight: concurrent requests for the same credential share one
//! call. 1,000 pods asking for one principal cost the KDC one extraction.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Whether this caller made the call or waited on another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// This caller ran the call.
    Leader,
    /// This caller received the leader's result.
    Follower,
}

type Slot<V, E> = watch::Receiver<Option<Result<V, E>>>;
/// Where the leader sends its result.
type Outcome<V, E> = watch::Sender<Option<Result<V, E>>>;

/// Coalesces concurrent calls by key.
pub struct SingleFlight<K, V, E> {
    calls: Mutex<HashMap<K, Slot<V, E>>>,
}

impl<K, V, E> Default for SingleFlight<K, V, E> {
    fn default() -> Self {
        SingleFlight {
            calls: Mutex::new(HashMap::new()),
        }
    }
}

/// Removes the key when the leader finishes or is cancelled, so a
/// cancelled leader never leaves followers waiting forever.
struct Finish<'a, K: Eq + Hash, V, E> {
    flight: &'a SingleFlight<K, V, E>,
    key: Option<K>,
}

impl<K: Eq + Hash, V, E> Drop for Finish<'_, K, V, E> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut calls = crate::locks::lock(&self.flight.calls);
            calls.remove(&key);
        }
    }
}

impl<K, V, E> SingleFlight<K, V, E>
where
    K: Eq + Hash + Clone,
    V: Clone,
    E: Clone + From<Abandoned>,
{
    /// Makes this caller the leader for `key` (the sender its result
    /// goes to), or hands it the running call's result to wait for.
    fn join(&self, key: &K) -> Result<Outcome<V, E>, Slot<V, E>> {
        let mut calls = crate::locks::lock(&self.calls);
        match calls.get(key) {
            Some(rx) => Err(rx.clone()),
            None => {
                let (tx, rx) = watch::channel(None);
                calls.insert(key.clone(), rx);
                Ok(tx)
            }
        }
    }

    /// Runs `call` unless a call for `key` is already running, in which
    /// case waits for that call's result.
    pub async fn run<F, Fut>(&self, key: K, call: F) -> (Result<V, E>, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        match self.join(&key) {
            Ok(tx) => {
                let _finish = Finish {
                    flight: self,
                    key: Some(key),
                };
                // Boxed: inline, the call's future (a KDC round trip, often
                // kilobytes) would be part of every caller's future,
                // followers' and cache hits' included, and fetches waiting
                // for the KDC budget are held by the thousand.
                let result = Box::pin(call()).await;
                let _ = tx.send(Some(result.clone()));
                (result, Role::Leader)
            }
            Err(rx) => (outcome(rx).await, Role::Follower),
        }
    }
}

impl<K, V, E> SingleFlight<K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Clone + From<Abandoned> + Send + Sync + 'static,
{
    /// [`Self::run`], but the call runs as a task of its own: a caller
    /// that gives up (its request's deadline passed while the call queued
    /// for the KDC budget) stops waiting, and the call goes on for the
    /// others and for the store. Cancelling a KDC call half way would
    /// waste what kadmind already did and let the next caller start the
    /// same call again. The call is made only by the leader, in its task,
    /// so followers do not hold its future.
    pub async fn run_detached<F, Fut>(self: &Arc<Self>, key: K, call: F) -> (Result<V, E>, Role)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let (rx, role) = match self.join(&key) {
            Ok(tx) => {
                let rx = tx.subscribe();
                let flight = Arc::clone(self);
                tokio::spawn(async move {
                    let _finish = Finish {
                        flight: &flight,
                        key: Some(key),
                    };
                    let _ = tx.send(Some(call().await));
                });
                (rx, Role::Leader)
            }
            Err(rx) => (rx, Role::Follower),
        };
        (outcome(rx).await, role)
    }
}

/// What the flight behind `rx` produced, or [`Abandoned`] if it ended
/// without a result.
async fn outcome<V: Clone, E: Clone + From<Abandoned>>(
    mut rx: watch::Receiver<Option<Result<V, E>>>,
) -> Result<V, E> {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone().unwrap_or_else(|| Err(E::from(Abandoned))),
        Err(_) => Err(E::from(Abandoned)),
    }
}

/// The leader was cancelled before it produced a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abandoned;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    #[derive(Debug, Clone, PartialEq)]
    struct E;
    impl From<Abandoned> for E {
        fn from(_: Abandoned) -> E {
            E
        }
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_call() {
        let flight = Arc::new(SingleFlight::<String, u32, E>::default());
        let calls = Arc::new(AtomicU32::new(0));
        let mut handles = Vec::new();
        for _ in 0..100 {
            let (flight, calls) = (Arc::clone(&flight), Arc::clone(&calls));
            handles.push(tokio::spawn(async move {
                flight
                    .run("HTTP/a".to_string(), || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(7)
                    })
                    .await
            }));
        }
        let mut followers = 0;
        for h in handles {
            let (r, role) = h.await.expect("join");
            assert_eq!(r, Ok(7));
            followers += u32::from(role == Role::Follower);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(followers, 99);
        // Once finished, the next call runs again.
        let (r, role) = flight.run("HTTP/a".to_string(), || async { Ok(8) }).await;
        assert_eq!((r, role), (Ok(8), Role::Leader));
    }

    /// A call whose future holds 16 KiB across an await, as a KDC round
    /// trip's does.
    async fn big_call() -> Result<u32, E> {
        let buffer = [7u8; 16 * 1024];
        tokio::task::yield_now().await;
        Ok(u32::from(buffer[100]))
    }

    #[tokio::test]
    async fn a_caller_does_not_hold_the_calls_future() {
        let flight = Arc::new(SingleFlight::<u8, u32, E>::default());
        assert!(std::mem::size_of_val(&big_call()) > 16 * 1024);
        let run = flight.run(1, big_call);
        let size = std::mem::size_of_val(&run);
        assert!(size < 1024, "{size}");
        assert_eq!(run.await, (Ok(7), Role::Leader));
        let detached = flight.run_detached(1, big_call);
        let size = std::mem::size_of_val(&detached);
        assert!(size < 1024, "{size}");
        assert_eq!(detached.await, (Ok(7), Role::Leader));
    }

    #[tokio::test]
    async fn a_detached_call_goes_on_when_its_caller_gives_up() {
        let flight = Arc::new(SingleFlight::<u8, u32, E>::default());
        let calls = Arc::new(AtomicU32::new(0));
        let call = |calls: Arc<AtomicU32>| async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(7)
        };
        // The leader's caller gives up long before the call ends.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(20),
            flight.run_detached(1, {
                let calls = Arc::clone(&calls);
                move || call(calls)
            }),
        )
        .await;
        assert!(gave_up.is_err());
        // A caller arriving later joins the same call, not a new one.
        let (r, role) = flight
            .run_detached(1, {
                let calls = Arc::clone(&calls);
                move || call(calls)
            })
            .await;
        assert_eq!((r, role), (Ok(7), Role::Follower));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the call ran twice");
    }

    #[tokio::test]
    async fn a_cancelled_leader_releases_its_followers() {
        let flight = Arc::new(SingleFlight::<u8, u32, E>::default());
        let leader = tokio::spawn({
            let flight = Arc::clone(&flight);
            async move {
                flight
                    .run(1, || async {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        Ok(1)
                    })
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let follower = tokio::spawn({
            let flight = Arc::clone(&flight);
            async move { flight.run(1, || async { Ok(2) }).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        leader.abort();
        let (r, _) = tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .expect("follower released")
            .expect("join");
        assert_eq!(r, Err(E));
    }
}
