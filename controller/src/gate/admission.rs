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
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};

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
    admit: oneshot::Sender<Admitted>,
}

/// A caller's turn; on a serial lane, the next caller's waits until this
/// is dropped (when the operation is done).
#[must_use = "a serial lane admits the next operation when this is dropped"]
#[derive(Debug)]
pub struct Admitted {
    _slot: Option<OwnedSemaphorePermit>,
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
    /// One operation at a time (serial lanes only).
    serial: Option<Arc<Semaphore>>,
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
            // The previous operation of a serial lane ends before the next
            // token is taken (the semaphore is never closed).
            let slot = match &self.serial {
                Some(one) => match Arc::clone(one).acquire_owned().await {
                    Ok(permit) => Some(permit),
                    Err(_) => return,
                },
                None => None,
            };
            let snapshot = self.limiter.until_ready().await;
            self.remaining
                .store(snapshot.remaining_burst_capacity(), AtomicOrdering::Relaxed);
            // A token is spent only on a caller still waiting.
            let mut turn = Admitted { _slot: slot };
            loop {
                let next = self.lock().heap.pop();
                match next {
                    Some(w) => match w.admit.send(turn) {
                        Ok(()) => break,
                        Err(back) => turn = back,
                    },
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
    /// waiting; `serial`: one operation at a time. Starts its dispatcher on
    /// the current Tokio runtime.
    pub fn start(rate: NonZeroU32, burst: NonZeroU32, max_queue: usize, serial: bool) -> Arc<Self> {
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
            serial: serial.then(|| Arc::new(Semaphore::new(1))),
        });
        let dispatcher = tokio::spawn(Arc::clone(&inner).dispatch());
        Arc::new(Admission { inner, dispatcher })
    }

    /// Waits for this caller's turn; hold it until the operation is done.
    pub async fn admit(&self, priority: Priority) -> Result<Admitted, Refused> {
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
        let a = Admission::start(nz(20), nz(5), 1000, false);
        let start = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..25 {
            let a = Arc::clone(&a);
            handles.push(tokio::spawn(async move {
                let _turn = a.admit(Priority::Starting).await.expect("admit");
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
        let a = Admission::start(nz(10), nz(1), 1000, false);
        // Drain the burst so everything below queues.
        let _turn = a.admit(Priority::Starting).await.expect("first");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for i in 0..4 {
            let (a, order) = (Arc::clone(&a), Arc::clone(&order));
            handles.push(tokio::spawn(async move {
                let _turn = a.admit(Priority::Background).await.expect("renewal");
                order.lock().expect("lock").push(format!("renewal-{i}"));
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        {
            let (a, order) = (Arc::clone(&a), Arc::clone(&order));
            handles.push(tokio::spawn(async move {
                let _turn = a.admit(Priority::Starting).await.expect("start");
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
        let a = Admission::start(nz(1), nz(1), 2, false);
        let _turn = a.admit(Priority::Starting).await.expect("burst");
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
            a.admit(Priority::Starting).await.err(),
            Some(Refused::QueueFull(2))
        );
    }

    /// A serial lane whose operation stalls does not bank admissions
    /// behind it: after the stall, operations go at most `burst` at once,
    /// then at the rate, one at a time.
    #[tokio::test]
    async fn a_serial_lane_admits_nothing_while_an_operation_stalls() {
        let a = Admission::start(nz(20), nz(5), 1000, true);
        let stalled = a.admit(Priority::Starting).await.expect("first");
        let start = Instant::now();
        let in_flight = Arc::new(AtomicU32::new(0));
        let mut handles = Vec::new();
        for _ in 0..30 {
            let (a, in_flight) = (Arc::clone(&a), Arc::clone(&in_flight));
            handles.push(tokio::spawn(async move {
                let turn = a.admit(Priority::Starting).await.expect("admit");
                let alone = in_flight.fetch_add(1, AtomicOrdering::SeqCst) == 0;
                tokio::time::sleep(Duration::from_millis(2)).await;
                in_flight.fetch_sub(1, AtomicOrdering::SeqCst);
                drop(turn);
                (Instant::now() - start, alone)
            }));
        }
        // The stall: long enough to earn every token of a second.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let released = Instant::now() - start;
        drop(stalled);
        let mut times = Vec::new();
        for h in handles {
            let (t, alone) = h.await.expect("join");
            assert!(alone, "two operations of a serial lane ran at once");
            times.push(t.saturating_sub(released));
        }
        times.sort();
        assert!(
            times[0] < Duration::from_millis(900),
            "admitted after the stall"
        );
        for (i, t) in times.iter().enumerate() {
            let allowed = 5.0 + 20.0 * t.as_secs_f64() + 1.0;
            assert!(
                (i as f64) < allowed,
                "operation {i} at {t:?} after the stall beat the budget: {times:?}"
            );
        }
    }
}
