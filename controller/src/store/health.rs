//! Whether the store answers, for `/readyz` and `kcred_store_up`.
//!
//! Every store call already fails when the backend does (and issuing with
//! it: fail closed). The probe keeps the signal current while no request
//! comes, and notices when the backend is back.

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::task::JoinHandle;

use super::Store;

/// Asks the store every `every` whether it answers and mirrors the answer
/// in `gauge` (1 up, 0 down). Runs until aborted.
pub fn spawn_probe(store: Arc<Store>, gauge: IntGauge, every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let s = Arc::clone(&store);
            let up = tokio::task::spawn_blocking(move || s.probe())
                .await
                .unwrap_or(false);
            gauge.set(i64::from(up));
        }
    })
}
