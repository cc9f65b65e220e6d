//! What follows the one state change that ends a job (done, or failed for good): its uploaded
//! input is deleted and its callback fired, in the background so the next claim is not held up.
//! Only the caller whose `complete` or `fail` (or reaper pass) changed the state calls this, so
//! each job's callback fires once.

use std::sync::Arc;
use std::time::Duration;

use stemsep_common::job::{Job, JobState};
use stemsep_common::queue::Queue;
use stemsep_common::storage::{ObjectKey, Storage};
use tokio_util::task::TaskTracker;

use crate::callback::{Notifier, Outcome};
use crate::metrics::Metrics;

/// Runs the after-effects of finished jobs; cheap to clone.
#[derive(Clone)]
pub struct Finisher {
    queue: Queue,
    storage: Arc<dyn Storage>,
    notifier: Notifier,
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
}

impl Finisher {
    /// A finisher over these parts.
    pub fn new(
        queue: Queue,
        storage: Arc<dyn Storage>,
        notifier: Notifier,
        metrics: Arc<Metrics>,
    ) -> Self {
        Finisher {
            queue,
            storage,
            notifier,
            metrics,
            tasks: TaskTracker::new(),
        }
    }

    /// `job` just ended in `state` (`error` says why a failed one failed): deletes its input and
    /// posts its callback, in the background.
    pub fn finished(&self, job: Job, state: JobState, error: Option<String>) {
        let this = self.clone();
        self.tasks.spawn(async move {
            let hash = &job.hash;
            let input = ObjectKey::input(&job);
            if let Err(e) = this.storage.delete(&input).await {
                // The retention sweep deletes it with the job's other objects.
                tracing::warn!(%hash, error = %e, "input not deleted");
            }
            let Some(outcome) = this.notifier.notify(&job, state, error.as_deref()).await else {
                return;
            };
            this.metrics
                .callbacks
                .with_label_values(&[outcome.label()])
                .inc();
            match &outcome {
                Outcome::Delivered => tracing::info!(%hash, "callback delivered"),
                other => tracing::warn!(%hash, outcome = %other, "callback not delivered"),
            }
            if let Err(e) = this
                .queue
                .set_callback_status(&job, &outcome.to_string())
                .await
            {
                tracing::warn!(%hash, error = %e, "callback outcome not recorded");
            }
        });
    }

    /// Waits up to `grace` for the after-effects still running; abandons the rest.
    pub async fn drain(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                pending = self.tasks.len(),
                "callbacks still running at exit, abandoned"
            );
        }
    }
}
