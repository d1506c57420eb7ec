//! One scheduler for every volume: when each volume is looked at next,
//! and why.
//!
//! A volume has at most one pending entry: a due time and a [`Cause`].
//! Triggers from the controller (a pushed refresh or wipe, the heartbeat's
//! verdicts) are due at once and merge with what is pending (the earliest
//! time, the strongest cause); after a run, the volume's next look (its
//! refresh deadline, a retry) replaces the entry, unless a trigger came in
//! while it ran. [`run`] starts due entries with bounded parallelism, in
//! groups its caller chooses (volumes that one controller call can
//! refresh together).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, Semaphore};

use super::lifecycle::Cause;
use crate::support::lock::lock;
use crate::support::time::Deadline;

/// Longest sleep between looks at the queue: bounds the effect of a wall
/// clock that jumps.
const MAX_IDLE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
struct Entry {
    due: Deadline,
    cause: Cause,
    seq: u64,
}

#[derive(Debug, Default)]
struct Queue {
    entries: HashMap<String, Entry>,
    order: BTreeSet<(Deadline, String)>,
    seq: u64,
}

impl Queue {
    fn remove(&mut self, volume_id: &str) -> Option<Entry> {
        let old = self.entries.remove(volume_id)?;
        self.order.remove(&(old.due, volume_id.to_string()));
        Some(old)
    }

    fn insert(&mut self, volume_id: &str, entry: Entry) {
        self.remove(volume_id);
        self.order.insert((entry.due, volume_id.to_string()));
        self.entries.insert(volume_id.to_string(), entry);
    }
}

/// The pending looks at every volume.
#[derive(Debug, Default)]
pub struct Schedule {
    queue: Mutex<Queue>,
    wake: Notify,
}

/// A volume's next look after a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Next {
    /// When.
    pub at: Deadline,
    /// Why.
    pub cause: Cause,
}

impl Schedule {
    /// An empty schedule.
    pub fn new() -> Self {
        Self::default()
    }

    /// A trigger due now, merged with what is pending for the volume.
    pub fn trigger(&self, volume_id: &str, cause: Cause) {
        self.trigger_all([volume_id], cause);
    }

    /// A mark to pass to [`Schedule::settle`] after a run that starts now.
    pub fn mark(&self) -> u64 {
        lock(&self.queue).seq
    }

    /// Sets the volume's next look (`None`: none) after a run that began
    /// at `mark`. A pending trigger stays instead if it arrived during the
    /// run (the run may have missed what it asks for) or if it is more than
    /// a deadline (a push, a revocation, a stale verdict: a kubelet call
    /// that ran meanwhile did not do what it asks).
    pub fn settle(&self, volume_id: &str, next: Option<Next>, mark: u64) {
        {
            let mut q = lock(&self.queue);
            if q.entries
                .get(volume_id)
                .is_some_and(|e| e.seq > mark || e.cause > Cause::Deadline)
            {
                return;
            }
            match next {
                None => {
                    q.remove(volume_id);
                }
                Some(n) => {
                    let seq = q.seq;
                    q.insert(
                        volume_id,
                        Entry {
                            due: n.at,
                            cause: n.cause,
                            seq,
                        },
                    );
                }
            }
        }
        self.wake.notify_one();
    }

    /// Triggers due now for many volumes (one push), with one wake-up: the
    /// runner finds them all due together.
    pub fn trigger_all<'a>(&self, volume_ids: impl IntoIterator<Item = &'a str>, cause: Cause) {
        {
            let mut q = lock(&self.queue);
            let now = Deadline::now();
            for volume_id in volume_ids {
                q.seq += 1;
                let seq = q.seq;
                let entry = match q.entries.get(volume_id) {
                    Some(old) => Entry {
                        due: old.due.min(now),
                        cause: old.cause.max(cause),
                        seq,
                    },
                    None => Entry {
                        due: now,
                        cause,
                        seq,
                    },
                };
                q.insert(volume_id, entry);
            }
        }
        self.wake.notify_one();
    }

    /// Removes and returns every entry due at `now`.
    pub fn take_due(&self, now: SystemTime) -> Vec<(String, Cause)> {
        let mut q = lock(&self.queue);
        let due: Vec<String> = q
            .order
            .iter()
            .take_while(|(at, _)| at.is_due(now))
            .map(|(_, id)| id.clone())
            .collect();
        due.into_iter()
            .filter_map(|id| q.remove(&id).map(|e| (id, e.cause)))
            .collect()
    }

    /// The earliest pending entry's time.
    pub fn next_due(&self) -> Option<Deadline> {
        lock(&self.queue).order.first().map(|(at, _)| *at)
    }

    /// What is pending for a volume.
    pub fn pending(&self, volume_id: &str) -> Option<(Deadline, Cause)> {
        lock(&self.queue)
            .entries
            .get(volume_id)
            .map(|e| (e.due, e.cause))
    }
}

/// Due entries, as [`run`] hands them out.
pub type Due = Vec<(String, Cause)>;

/// Runs due entries forever (until the task is aborted): `group` splits
/// what is due at once into jobs, at most `parallel` jobs run at once,
/// each by `work(its entries)`. `idle()` runs when the last job started
/// has ended (a burst of work is over), once per burst.
pub async fn run<G, F, Fut, I>(schedule: Arc<Schedule>, parallel: usize, group: G, work: F, idle: I)
where
    G: Fn(Due) -> Vec<Due>,
    F: Fn(Due) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
    I: Fn() + Send + Sync + 'static,
{
    let permits = Arc::new(Semaphore::new(parallel.max(1)));
    let idle = Arc::new(idle);
    // Jobs handed out and not ended, counted before any of them starts:
    // the count reaches zero only when a burst's last job ends.
    let running = Arc::new(AtomicUsize::new(0));
    loop {
        let due = schedule.take_due(SystemTime::now());
        let jobs = if due.is_empty() {
            Vec::new()
        } else {
            group(due)
        };
        running.fetch_add(jobs.len(), Ordering::AcqRel);
        for entries in jobs {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let job = work(entries);
            let (running, idle) = (Arc::clone(&running), Arc::clone(&idle));
            tokio::spawn(async move {
                job.await;
                drop(permit);
                if running.fetch_sub(1, Ordering::AcqRel) == 1 {
                    idle();
                }
            });
        }
        let sleep = schedule
            .next_due()
            .map_or(MAX_IDLE, |at| at.remaining(SystemTime::now()).min(MAX_IDLE));
        if sleep.is_zero() {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = schedule.wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn later(secs: u64) -> Deadline {
        Deadline::after(Duration::from_secs(secs))
    }

    #[test]
    fn a_trigger_is_due_at_once_and_the_strongest_cause_wins() {
        let s = Schedule::new();
        s.settle(
            "v",
            Some(Next {
                at: later(3600),
                cause: Cause::Deadline,
            }),
            s.mark(),
        );
        assert!(s.take_due(SystemTime::now()).is_empty());
        s.trigger("v", Cause::Revoked);
        s.trigger("v", Cause::Pushed);
        assert_eq!(
            s.take_due(SystemTime::now()),
            vec![("v".to_string(), Cause::Revoked)]
        );
        assert_eq!(s.pending("v"), None, "taken");
    }

    #[test]
    fn settling_replaces_the_pending_look_unless_a_trigger_came_during_the_run() {
        let s = Schedule::new();
        let mark = s.mark();
        s.trigger("v", Cause::Pushed);
        let next = Next {
            at: later(3600),
            cause: Cause::Deadline,
        };
        s.settle("v", Some(next), mark);
        assert_eq!(
            s.pending("v").map(|p| p.1),
            Some(Cause::Pushed),
            "push kept"
        );
        s.take_due(SystemTime::now());
        s.settle("v", Some(next), s.mark());
        assert_eq!(s.pending("v"), Some((next.at, Cause::Deadline)));
        let moved = Next {
            at: later(7200),
            cause: Cause::Deadline,
        };
        s.settle("v", Some(moved), s.mark());
        assert_eq!(
            s.pending("v"),
            Some((moved.at, Cause::Deadline)),
            "replaced"
        );
        s.settle("v", None, s.mark());
        assert_eq!(s.pending("v"), None);
    }

    #[test]
    fn a_pending_revocation_outlives_a_kubelet_call_that_ran_meanwhile() {
        let s = Schedule::new();
        s.trigger("v", Cause::Revoked);
        // A republish started after the trigger and settles its own next look.
        s.settle("v", None, s.mark());
        assert_eq!(s.pending("v").map(|p| p.1), Some(Cause::Revoked));
    }

    #[test]
    fn due_entries_come_out_in_time_order_and_later_ones_stay() {
        let s = Schedule::new();
        let past = |secs| Deadline::at(SystemTime::now() - Duration::from_secs(secs));
        for (id, at) in [("b", past(5)), ("a", past(10)), ("c", later(3600))] {
            s.settle(
                id,
                Some(Next {
                    at,
                    cause: Cause::Deadline,
                }),
                s.mark(),
            );
        }
        let due: Vec<String> = s
            .take_due(SystemTime::now())
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(due, ["a", "b"]);
        assert!(s.next_due().is_some_and(|d| !d.is_due(SystemTime::now())));
    }

    #[tokio::test]
    async fn the_runner_starts_due_work() {
        let s = Arc::new(Schedule::new());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let runner = tokio::spawn(run(
            Arc::clone(&s),
            2,
            |due| vec![due],
            move |due| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(due);
                }
            },
            || {},
        ));
        s.trigger("v", Cause::Pushed);
        assert_eq!(
            rx.recv().await,
            Some(vec![("v".to_string(), Cause::Pushed)])
        );
        runner.abort();
    }

    #[tokio::test]
    async fn a_push_of_many_volumes_is_due_together() {
        let s = Arc::new(Schedule::new());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let ids: Vec<String> = (0..100).map(|i| format!("v{i:03}")).collect();
        s.trigger_all(ids.iter().map(String::as_str), Cause::Pushed);
        let runner = tokio::spawn(run(
            Arc::clone(&s),
            2,
            |due| vec![due],
            move |due| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(due);
                }
            },
            || {},
        ));
        let job = rx.recv().await.expect("a job");
        assert_eq!(job.len(), 100, "one job for the whole push");
        runner.abort();
    }

    #[tokio::test]
    async fn idle_runs_once_when_a_bursts_last_job_ends() {
        let s = Arc::new(Schedule::new());
        let ended = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let runner = {
            let ended = Arc::clone(&ended);
            tokio::spawn(run(
                Arc::clone(&s),
                2,
                // One job a volume: five jobs, two at a time.
                |due| due.into_iter().map(|d| vec![d]).collect(),
                move |_| {
                    let ended = Arc::clone(&ended);
                    async move {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        ended.fetch_add(1, Ordering::SeqCst);
                    }
                },
                move || {
                    let _ = tx.send(());
                },
            ))
        };
        let ids: Vec<String> = (0..5).map(|i| format!("v{i}")).collect();
        for burst in 1..=2 {
            s.trigger_all(ids.iter().map(String::as_str), Cause::Pushed);
            rx.recv().await.expect("idle");
            assert_eq!(
                ended.load(Ordering::SeqCst),
                5 * burst,
                "idle before the last job ended"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(
                rx.try_recv().is_err(),
                "idle more than once in burst {burst}"
            );
        }
        runner.abort();
    }
}
