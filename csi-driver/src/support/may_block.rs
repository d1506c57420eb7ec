//! A call that may wait on the network, made where nothing can be awaited
//! (a tonic interceptor is synchronous).

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `f` on the calling thread. On the multi-threaded runtime the
/// worker first hands its other tasks to another thread, so a call that
/// waits (a Kerberos token while the KDC does not answer) stalls only the
/// task that asked, not kubelet's calls queued behind it on that worker.
/// On a current-thread runtime, or outside any, `f` simply runs.
pub fn may_block<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::may_block;

    /// With one worker, a task blocked in `may_block` leaves the others
    /// running: the blocked call returns only after another task ran.
    #[test]
    fn one_worker_keeps_answering_while_a_call_waits() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (ran, waits_for) = mpsc::channel::<()>();
        let outcome = rt.block_on(async move {
            let blocked = tokio::spawn(async move {
                may_block(|| waits_for.recv_timeout(Duration::from_secs(20)))
            });
            // Give the blocked task the worker first.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let other = tokio::spawn(async move { ran.send(()) });
            tokio::time::timeout(Duration::from_secs(3), other)
                .await
                .expect("another task ran while one waited")
                .expect("task")
                .expect("sent");
            blocked.await.expect("task")
        });
        assert_eq!(outcome, Ok(()));
    }

    #[test]
    fn outside_a_runtime_and_on_a_current_thread_one_it_just_runs() {
        assert_eq!(may_block(|| 7), 7);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        assert_eq!(rt.block_on(async { may_block(|| 8) }), 8);
    }
}
