//! Keeps a claimed job's lease alive while the worker works on it.

use std::time::Duration;

use stemsep_common::queue::{Claim, Queue};
use tokio::task::JoinHandle;

/// Refreshes a lease in the background until dropped.
pub struct Heartbeat(JoinHandle<()>);

impl Heartbeat {
    /// Refreshes `claim`'s lease every `every` (a third of the lease, so two beats may be lost
    /// to a Redis hiccup before the lease lapses).
    pub fn start(queue: Queue, claim: Claim, every: Duration) -> Self {
        Heartbeat(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let hash = &claim.job.hash;
            loop {
                tick.tick().await;
                match queue.heartbeat(&claim).await {
                    Ok(true) => {}
                    // Outputs are idempotent, so finishing anyway only wastes work; the other
                    // worker's result and ours are the same stems.
                    Ok(false) => tracing::warn!(%hash, "lease now held by another worker"),
                    Err(e) => tracing::warn!(%hash, error = %e, "heartbeat failed"),
                }
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}
