//! Blocking work run a few at a time, off the async workers.

use std::sync::Arc;

use tokio::sync::Semaphore;

/// Work handed to a blocking thread never came back (the thread panicked,
/// or the runtime is stopping).
#[derive(Debug, thiserror::Error)]
#[error("blocking task lost: {0}")]
pub struct TaskLost(pub String);

/// Turns for work on blocking threads: at most as many run at once as
/// there are turns, so a flood of callers waits here holding neither an
/// async worker nor a thread. The work keeps its turn until it returns,
/// also when its caller stopped waiting: threads stuck on a lock or a
/// disk never outnumber the turns.
pub struct Turns(Arc<Semaphore>);

impl Turns {
    /// `n` turns.
    pub fn new(n: usize) -> Self {
        Turns(Arc::new(Semaphore::new(n)))
    }

    /// Runs `work` on a blocking thread once a turn is free.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, TaskLost> {
        // Never closed: `Turns` owns it.
        let turn = Arc::clone(&self.0)
            .acquire_owned()
            .await
            .map_err(|e| TaskLost(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            work()
        })
        .await
        .map_err(|e| TaskLost(e.to_string()))
    }
}
