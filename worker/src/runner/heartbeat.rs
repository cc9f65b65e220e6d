//! Keeps a claimed job's lease alive while the worker works on it, and notices when the job is
//! no longer this worker's.

use std::time::Duration;

use stemsep_common::queue::{Claim, Queue};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Refreshes a lease in the background until dropped.
pub struct Heartbeat(JoinHandle<()>);

impl Heartbeat {
    /// Refreshes `claim`'s lease every `every` (a third of the lease, so two beats may be lost
    /// to a Redis hiccup before the lease lapses). When Redis answers that the claim no longer
    /// owns the job (a reaper took it back while this worker could not reach Redis, or a
    /// resubmission replaced the record), cancels `lost` and stops: the attempt is abandoned
    /// within one beat of the worker learning it.
    pub fn start(queue: Queue, claim: Claim, every: Duration, lost: CancellationToken) -> Self {
        Heartbeat(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let hash = &claim.job.hash;
            loop {
                tick.tick().await;
                match queue.heartbeat(&claim).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(%hash, token = claim.token, "the job is no longer this worker's: abandoning the attempt");
                        lost.cancel();
                        return;
                    }
                    // Redis out of reach: keep trying. The lease may lapse meanwhile, but the job
                    // stays ours until a reaper, once Redis is back, waits out a whole lease
                    // without hearing from us.
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
