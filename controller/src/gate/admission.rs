//! Admission: the token bucket, served in priority order.
//!
//! Callers wait in one priority queue per lane; a dispatcher takes a token
//! from the bucket (governor's GCRA: at most `burst + rate * t` operations
//! in any window of `t` seconds), then admits the most urgent waiter. A pod
//! that is starting goes ahead of every renewal waiting at that moment.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};
use tokio::sync::{Notify, oneshot};

/// How urgent an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Renewals and refreshes: they can wait, the pod still has valid files.
    Background = 0,
    /// A starting pod's first issue: it cannot run without it.
    Starting = 1,
}

struct Waiter {
    priority: Priority,
    seq: u64,
    admit: oneshot::Sender<()>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    /// Higher priority first, then first come first served.
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
    StateInformationMiddleware,
>;

struct Queue {
    heap: BinaryHeap<Waiter>,
    seq: u64,
}

/// Why admission was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Too many operations are already waiting.
    QueueFull(usize),
}

struct Inner {
    limiter: Limiter,
    queue: Mutex<Queue>,
    wake: Notify,
    max_queue: usize,
    remaining: AtomicU32,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        crate::locks::lock(&self.queue)
    }

    /// Hands out tokens, most urgent waiter first, for as long as the lane
    /// exists.
    async fn dispatch(self: Arc<Self>) {
        loop {
            let notified = self.wake.notified();
            if self.lock().heap.is_empty() {
                notified.await;
                continue;
            }
            let snapshot = self.limiter.until_ready().await;
            self.remaining
                .store(snapshot.remaining_burst_capacity(), AtomicOrdering::Relaxed);
            // A token is spent only on a caller still waiting.
            loop {
                let next = self.lock().heap.pop();
                match next {
                    Some(w) => {
                        if w.admit.send(()).is_ok() {
                            break;
                        }
                    }
                    None => break,
                }
            }
        }
    }
}

/// One lane's bucket and queue; its dispatcher stops when it is dropped.
pub struct Admission {
    inner: Arc<Inner>,
    dispatcher: tokio::task::JoinHandle<()>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.dispatcher.abort();
    }
}

impl Admission {
    /// `rate` operations per second, bursts of `burst`, at most `max_queue`
    /// waiting. Starts its dispatcher on the current Tokio runtime.
    pub fn start(rate: NonZeroU32, burst: NonZeroU32, max_queue: usize) -> Arc<Self> {
        let quota = Quota::per_second(rate).allow_burst(burst);
        let inner = Arc::new(Inner {
            limiter: RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>(),
            queue: Mutex::new(Queue {
                heap: BinaryHeap::new(),
                seq: 0,
            }),
            wake: Notify::new(),
            max_queue,
            remaining: AtomicU32::new(burst.get()),
        });
        let dispatcher = tokio::spawn(Arc::clone(&inner).dispatch());
        Arc::new(Admission { inner, dispatcher })
    }

    /// Waits for this caller's turn.
    pub async fn admit(&self, priority: Priority) -> Result<(), Refused> {
        let rx = {
            let mut q = self.inner.lock();
            if q.heap.len() >= self.inner.max_queue {
                return Err(Refused::QueueFull(q.heap.len()));
            }
            let (tx, rx) = oneshot::channel();
            q.seq += 1;
            let seq = q.seq;
            q.heap.push(Waiter {
                priority,
                seq,
                admit: tx,
            });
            rx
        };
        self.inner.wake.notify_one();
        // The dispatcher drops a sender only when the lane shuts down.
        rx.await.map_err(|_| Refused::QueueFull(0))
    }

    /// Operations waiting now.
    pub fn queued(&self) -> usize {
        self.inner.lock().heap.len()
    }

    /// Tokens left in the bucket after the last admission.
    pub fn remaining(&self) -> u32 {
        self.inner.remaining.load(AtomicOrdering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    #[tokio::test]
    async fn admissions_never_exceed_burst_plus_rate() {
        let a = Admission::start(nz(20), nz(5), 1000);
        let start = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..25 {
            let a = Arc::clone(&a);
            handles.push(tokio::spawn(async move {
                a.admit(Priority::Starting).await.expect("admit");
                Instant::now()
            }));
        }
        let mut times = Vec::new();
        for h in handles {
            times.push(h.await.expect("join") - start);
        }
        times.sort();
        // 5 at once, then 20/s: the 25th needs about (25-5)/20 = 1 s.
        assert!(times[24] >= Duration::from_millis(900), "{:?}", times[24]);
        for (i, t) in times.iter().enumerate() {
            let allowed = 5.0 + 20.0 * t.as_secs_f64() + 1.0;
            assert!(
                (i as f64) < allowed,
                "admission {i} at {t:?} beat the budget"
            );
        }
    }

    #[tokio::test]
    async fn starting_pods_go_ahead_of_waiting_renewals() {
        let a = Admission::start(nz(10), nz(1), 1000);
        // Drain the burst so everything below queues.
        a.admit(Priority::Starting).await.expect("first");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for i in 0..4 {
            let (a, order) = (Arc::clone(&a), Arc::clone(&order));
            handles.push(tokio::spawn(async move {
                a.admit(Priority::Background).await.expect("renewal");
                order.lock().expect("lock").push(format!("renewal-{i}"));
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        {
            let (a, order) = (Arc::clone(&a), Arc::clone(&order));
            handles.push(tokio::spawn(async move {
                a.admit(Priority::Starting).await.expect("start");
                order.lock().expect("lock").push("starting".into());
            }));
        }
        for h in handles {
            h.await.expect("join");
        }
        let order = order.lock().expect("lock").clone();
        let pos = order.iter().position(|s| s == "starting").expect("present");
        assert!(
            pos <= 1,
            "starting pod admitted at position {pos}: {order:?}"
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let a = Admission::start(nz(1), nz(1), 2);
        a.admit(Priority::Starting).await.expect("burst");
        let _w1 = tokio::spawn({
            let a = Arc::clone(&a);
            async move { a.admit(Priority::Starting).await }
        });
        let _w2 = tokio::spawn({
            let a = Arc::clone(&a);
            async move { a.admit(Priority::Starting).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            a.admit(Priority::Starting).await,
            Err(Refused::QueueFull(2))
        );
    }
}
