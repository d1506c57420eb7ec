//! Concurrent load: each client makes its calls one after another, all
//! clients at once, a fixed number of calls each (bounded in count).

use std::future::Future;
use std::time::{Duration, Instant};

/// How long the whole load took and each call's latency.
pub struct Outcome {
    /// From the first call to the last answer.
    pub elapsed: Duration,
    /// Every call's latency.
    pub latencies: Vec<Duration>,
}

impl Outcome {
    /// Calls per second.
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `calls` calls on each of `clients` concurrently; `call(client,
/// client_index, call_index)` makes one. Any failed call fails the load.
pub async fn concurrent<C, F, Fut>(
    clients: Vec<C>,
    calls: usize,
    call: F,
) -> anyhow::Result<Outcome>
where
    C: Clone + Send + 'static,
    F: Fn(C, usize, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (c, client) in clients.into_iter().enumerate() {
        let call = call.clone();
        set.spawn(async move {
            let mut lat = Vec::with_capacity(calls);
            for i in 0..calls {
                let t = Instant::now();
                call(client.clone(), c, i).await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = set.join_next().await {
        latencies.extend(done??);
    }
    Ok(Outcome {
        elapsed: start.elapsed(),
        latencies,
    })
}
