//! Every worker also reaps: jobs whose worker died (lease gone) go back to `toWorker`, or to the
//! dead-letter list once out of attempts. It samples the queue depths for the metrics too.

use std::sync::Arc;
use std::time::Duration;

use stemsep_common::queue::Queue;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Runs reaper passes every `every` until `stop` is cancelled.
///
/// A job is taken back once a pass finds its lease gone and a second pass, within three
/// intervals, still does: at most about `lease + every` after its worker's last heartbeat.
pub async fn run(queue: Queue, metrics: Arc<Metrics>, every: Duration, stop: CancellationToken) {
    let suspect_for = every * 3;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match queue.reap(suspect_for).await {
            Ok(r) => {
                failing = false;
                if r.requeued > 0 || r.dead > 0 {
                    tracing::warn!(
                        requeued = r.requeued,
                        dead = r.dead,
                        "took back jobs from lost workers"
                    );
                    metrics
                        .jobs_reaped
                        .with_label_values(&["requeued"])
                        .inc_by(r.requeued.into());
                    metrics
                        .jobs_reaped
                        .with_label_values(&["dead"])
                        .inc_by(r.dead.into());
                }
            }
            Err(e) => {
                // The claim loop already reports Redis outages; say it once here.
                if !failing {
                    tracing::warn!(error = %e, "reaper pass failed");
                }
                failing = true;
                continue;
            }
        }
        if let Ok((waiting, processing, dead)) = queue.depths().await {
            let g = &metrics.queue_depth;
            g.with_label_values(&["toWorker"]).set(waiting as i64);
            g.with_label_values(&["processing"]).set(processing as i64);
            g.with_label_values(&["deadLetter"]).set(dead as i64);
        }
    }
}
