//! Every worker also keeps the queue moving: jobs whose back-off is over go back to `toWorker`,
//! jobs whose worker was lost (lease-less for a whole lease time) are taken back or, out of
//! attempts, failed for good, and finished jobs past their retention are deleted. It samples the
//! queue depths for the metrics too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stemsep_common::job::JobState;
use stemsep_common::queue::Queue;
use stemsep_common::storage::Storage;
use tokio_util::sync::CancellationToken;

use stemsep_common::retention;

use super::finish::Finisher;
use crate::metrics::Metrics;

/// Delayed jobs moved to `toWorker` per pass at most.
const PROMOTE_BATCH: usize = 1000;

/// What a reaper works with.
pub struct Reaper {
    /// The queue.
    pub queue: Queue,
    /// Where expired jobs' objects are deleted.
    pub storage: Arc<dyn Storage>,
    /// Fires the callbacks of jobs it fails for good.
    pub finisher: Finisher,
    /// The worker's metrics.
    pub metrics: Arc<Metrics>,
}

impl Reaper {
    /// Runs a pass every `every` until `stop` is cancelled.
    ///
    /// After a pass that could not reach Redis, the next successful one starts a quiet time of
    /// one lease during which nothing is taken back: the workers that hold leases were cut off
    /// too, and their heartbeats get that long to renew leases that lapsed meanwhile. A job is
    /// thus taken back only after Redis has seen it lease-less for a whole lease time while this
    /// reaper was connected.
    pub async fn run(self, every: Duration, stop: CancellationToken) {
        let lease = self.queue.settings().lease;
        let mut failing = false;
        let mut quiet_until: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let reap = !failing && quiet_until.is_none_or(|t| Instant::now() >= t);
            match self.pass(reap).await {
                Ok(()) => {
                    if failing {
                        failing = false;
                        quiet_until = Some(Instant::now() + lease);
                        tracing::info!(
                            lease_secs = lease.as_secs_f64(),
                            "Redis reachable again: no job is taken back for a lease"
                        );
                    }
                }
                Err(e) => {
                    // The claim loop already reports Redis outages; say it once here.
                    if !failing {
                        tracing::warn!(error = %e, "reaper pass failed");
                    }
                    failing = true;
                }
            }
        }
    }

    async fn pass(&self, reap: bool) -> stemsep_common::Result<()> {
        let promoted = self.queue.promote_due(PROMOTE_BATCH).await?;
        if promoted > 0 {
            tracing::info!(promoted, "back-off over: jobs returned to the queue");
        }
        if reap {
            self.reap().await?;
        }
        let expired = retention::sweep(&self.queue, &self.storage).await?;
        self.metrics.jobs_expired.inc_by(expired);
        let (waiting, processing, dead) = self.queue.depths().await?;
        let delayed = self.queue.delayed_count().await?;
        let g = &self.metrics.queue_depth;
        g.with_label_values(&["toWorker"]).set(waiting as i64);
        g.with_label_values(&["processing"]).set(processing as i64);
        g.with_label_values(&["deadLetter"]).set(dead as i64);
        g.with_label_values(&["delayed"]).set(delayed as i64);
        Ok(())
    }

    async fn reap(&self) -> stemsep_common::Result<()> {
        let r = self.queue.reap().await?;
        if r.requeued == 0 && r.dead.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            requeued = r.requeued,
            dead = r.dead.len(),
            "took back jobs from lost workers"
        );
        let m = &self.metrics.jobs_reaped;
        m.with_label_values(&["requeued"]).inc_by(r.requeued.into());
        m.with_label_values(&["dead"]).inc_by(r.dead.len() as u64);
        // This pass's script failed each of these for good: its callback is ours to fire.
        for hash in r.dead {
            if let Some(job) = self.queue.job(&hash).await? {
                tracing::error!(%hash, error = ?job.error, "job failed for good: dead-lettered");
                let error = job.error.clone();
                self.finisher.finished(job, JobState::Failed, error);
            }
        }
        Ok(())
    }
}
