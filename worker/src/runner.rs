//! The worker loop: claim → fetch the input → separate → store the stems → acknowledge → callback.
//!
//! Delivery is at-least-once (see `stemsep_common::queue`): a claimed job holds a lease that a
//! [`heartbeat`] refreshes every third of its lifetime; every worker also runs the [`reaper`],
//! which gives the jobs of dead workers to live ones. A failed attempt goes back to the queue
//! until the job is out of attempts, then to the dead-letter list with its reason. Redis outages
//! are waited out: the loop backs off, reconnects and goes on. A stop request (SIGTERM) ends
//! claiming; the job in hand gets a grace period to finish and is handed back otherwise.

pub mod heartbeat;
pub mod reaper;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder, Retryable};
use bytes::Bytes;
use stemsep_common::job::{Job, JobState, Track};
use stemsep_common::queue::{stems_field, Claim, Failed, Queue};
use stemsep_common::storage::{ObjectKey, Storage};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::callback::Notifier;
use stemsep_engine::{Mp3Sink, Progress};

use crate::config::{JobOptions, RunnerConfig, WorkerArgs};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::models::{Loaded, Models};
use heartbeat::Heartbeat;

/// First pause after a Redis error; doubled on each further one.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest pause between reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long acknowledging a finished job is retried through a Redis outage. Past it the job is
/// left to the reaper, which runs it again (its outputs are idempotent).
const ACK_PATIENCE: Duration = Duration::from_secs(120);

/// One worker: a claim loop plus its reaper, sharing a queue, storage and loaded models.
pub struct Runner {
    config: RunnerConfig,
    queue: Queue,
    storage: Arc<dyn Storage>,
    models: Models,
    notifier: Notifier,
    metrics: Arc<Metrics>,
}

/// What became of one claimed job.
enum Ending {
    /// Every stem is stored: the job's stems, as the API lists them.
    Separated(Vec<Track>),
    Failed(Error),
    HandedBack,
}

impl Runner {
    /// A runner over these parts.
    pub fn new(
        config: RunnerConfig,
        queue: Queue,
        storage: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let models = Models::new(config.model_dir.clone());
        let notifier = Notifier::new(config.callback.clone());
        Runner {
            config,
            queue,
            storage,
            models,
            notifier,
            metrics,
        }
    }

    /// Claims and runs jobs until `stop` is cancelled, then finishes or hands back the current
    /// job, waits for pending callbacks (up to the grace period) and returns.
    pub async fn run_until_stopped(&self, stop: CancellationToken) {
        let lease = self.queue.settings().lease;
        let reaper = tokio::spawn(reaper::run(
            self.queue.clone(),
            self.metrics.clone(),
            (lease / 2).max(Duration::from_millis(250)),
            stop.child_token(),
        ));
        tracing::info!(worker = %self.config.worker_id, "worker started");
        self.announce_models(&stop).await;
        let mut callbacks = JoinSet::new();
        let mut backoff = Backoff::default();
        let mut blocking = None;
        while !stop.is_cancelled() {
            while callbacks.try_join_next().is_some() {}
            let conn = match &mut blocking {
                Some(c) => c,
                None => match self.queue.blocking_conn(self.config.claim_block).await {
                    Ok(c) => blocking.insert(c),
                    Err(e) => {
                        backoff.fail("cannot connect to Redis", &e, &stop).await;
                        continue;
                    }
                },
            };
            // The claim is never cut short by `stop`: a BLMOVE abandoned mid-flight could still
            // move a job, which would then wait for the reaper. It returns within claim_block.
            match self
                .queue
                .claim(conn, &self.config.worker_id, self.config.claim_block)
                .await
            {
                Ok(None) => backoff.ok(),
                Ok(Some(claim)) => {
                    backoff.ok();
                    self.run_claim(claim, &stop, &mut callbacks).await;
                }
                Err(e) => {
                    // A fresh connection after any error: the old one may be dead or desynced.
                    blocking = None;
                    backoff.fail("claim failed", &e, &stop).await;
                }
            }
        }
        tracing::info!("stop requested: no more claims");
        if tokio::time::timeout(self.config.grace, async {
            while callbacks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!(
                pending = callbacks.len(),
                "callbacks still running at exit, abandoned"
            );
        }
        reaper.abort();
        tracing::info!("worker stopped");
    }

    /// Announces the worker's models to Redis, waiting out an outage (the REST server offers only
    /// announced models, once any is announced).
    async fn announce_models(&self, stop: &CancellationToken) {
        let mut backoff = Backoff::default();
        while !stop.is_cancelled() {
            match self.models.announce(&self.queue).await {
                Ok(0) => {
                    tracing::warn!(dir = %self.config.model_dir.display(), "no models to serve");
                    return;
                }
                Ok(_) => return,
                Err(Error::Common(e)) => backoff.fail("cannot announce the models", &e, stop).await,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot announce the models");
                    return;
                }
            }
        }
    }

    /// Runs one claimed job to its end: acknowledged, failed, or handed back on stop.
    async fn run_claim(&self, claim: Claim, stop: &CancellationToken, callbacks: &mut JoinSet<()>) {
        let started = Instant::now();
        let hash = claim.job.hash.clone();
        self.metrics.jobs_claimed.inc();
        tracing::info!(%hash, model = %claim.job.model, attempt = claim.job.attempts, "job claimed");
        let lease = self.queue.settings().lease;
        let _heartbeat = Heartbeat::start(self.queue.clone(), claim.clone(), lease / 3);

        let work = self.attempt(&claim);
        tokio::pin!(work);
        let ending = tokio::select! {
            r = &mut work => r.map_or_else(Ending::Failed, Ending::Separated),
            _ = stop.cancelled() => {
                tracing::info!(%hash, grace_secs = self.config.grace.as_secs(), "stop requested: finishing the current job");
                match tokio::time::timeout(self.config.grace, &mut work).await {
                    Ok(r) => r.map_or_else(Ending::Failed, Ending::Separated),
                    Err(_) => Ending::HandedBack,
                }
            }
        };

        match ending {
            Ending::Separated(tracks) => {
                if self
                    .persist("acknowledge", || self.queue.complete(&claim))
                    .await
                    .is_some()
                {
                    self.metrics.jobs_done.inc();
                    self.metrics
                        .job_seconds
                        .observe(started.elapsed().as_secs_f64());
                    tracing::info!(%hash, secs = started.elapsed().as_secs_f64(), "job done");
                    let mut job = claim.job.clone();
                    job.stems = tracks;
                    self.spawn_callback(job, JobState::Done, None, callbacks);
                }
            }
            Ending::Failed(e) => {
                let reason = e.to_string();
                self.metrics.jobs_failed.inc();
                tracing::warn!(%hash, attempt = claim.job.attempts, error = %reason, "job attempt failed");
                match self
                    .persist("record the failure", || self.queue.fail(&claim, &reason))
                    .await
                {
                    Some(Failed::Retrying) => self.metrics.jobs_retried.inc(),
                    Some(Failed::Dead) => {
                        self.metrics.jobs_dead.inc();
                        tracing::error!(%hash, error = %reason, "job failed for good: dead-lettered");
                        self.spawn_callback(
                            claim.job.clone(),
                            JobState::Failed,
                            Some(reason),
                            callbacks,
                        );
                    }
                    Some(Failed::NotOurs) => {
                        tracing::info!(%hash, "job failed here but another worker holds it now")
                    }
                    None => {}
                }
            }
            Ending::HandedBack => {
                if self
                    .persist("hand back", || self.queue.release(&claim))
                    .await
                    .is_some()
                {
                    self.metrics.jobs_released.inc();
                    tracing::warn!(%hash, "job not finished within the grace period: handed back");
                }
            }
        }
    }

    /// One attempt at a job, up to and including storing its stems and recording which they are.
    async fn attempt(&self, claim: &Claim) -> Result<Vec<Track>, Error> {
        let hash = &claim.job.hash;
        let input = self.storage.get(&ObjectKey::input(hash)).await?;
        let model = self.models.get(&claim.job.model).await?;

        // Progress leaves the engine's thread through a watch channel, so Redis sees only the
        // latest value and never slows the engine down.
        let (tx, mut rx) = tokio::sync::watch::channel(0u8);
        let queue = self.queue.clone();
        let h = hash.clone();
        let forward = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let p = *rx.borrow_and_update();
                if let Err(e) = queue.set_progress(&h, p).await {
                    tracing::debug!(hash = %h, error = %e, "progress not recorded");
                }
            }
        });
        let opts = self.config.separate.clone();
        let segment_seconds = self.metrics.segment_seconds.clone();
        let separated = tokio::task::spawn_blocking(move || {
            // The first report comes after decoding, so only later intervals time a segment.
            let last: Mutex<Option<Instant>> = Mutex::new(None);
            let progress = |p: u8| {
                let now = Instant::now();
                if let Ok(mut last) = last.lock() {
                    if let Some(t) = last.replace(now) {
                        segment_seconds.observe(now.duration_since(t).as_secs_f64());
                    }
                }
                tx.send_if_modified(|v| std::mem::replace(v, p) != p);
            };
            separate(&model, &input, &opts, &progress)
        })
        .await;
        // The last progress write must land before the acknowledgement (or failure) resets it.
        let _ = forward.await;
        let stems = separated.map_err(|e| Error::Task(e.to_string()))??;
        let tracks: Vec<Track> = stems.iter().map(|(t, _)| t.clone()).collect();
        for (track, mp3) in stems {
            self.storage
                .put(&ObjectKey::stem(hash, &track), Bytes::from(mp3))
                .await?;
        }
        // The submission recorded the stems when the model was already announced; a job taken
        // before that learns them here, before it is acknowledged.
        if claim.job.stems != tracks {
            self.queue
                .set_note(hash, "stems", &stems_field(&tracks))
                .await?;
        }
        Ok(tracks)
    }

    /// Retries a Redis write through an outage for up to [`ACK_PATIENCE`]; `None` if it never
    /// went through (the lease then lapses and the reaper takes over).
    async fn persist<T, F, Fut>(&self, what: &str, op: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = stemsep_common::Result<T>>,
    {
        op.retry(redis_backoff().with_total_delay(Some(ACK_PATIENCE)))
            .notify(|e, _| tracing::warn!(error = %e, "cannot {what} yet; retrying"))
            .await
            .inspect_err(|e| tracing::error!(error = %e, "gave up trying to {what}"))
            .ok()
    }

    /// Fires the callback of `job`, if it has one, without holding up the next claim.
    fn spawn_callback(
        &self,
        job: Job,
        state: JobState,
        error: Option<String>,
        callbacks: &mut JoinSet<()>,
    ) {
        if job.callback.is_none() {
            return;
        }
        let notifier = self.notifier.clone();
        let queue = self.queue.clone();
        let metrics = self.metrics.clone();
        callbacks.spawn(async move {
            let Some(outcome) = notifier.notify(&job, state, error.as_deref()).await else {
                return;
            };
            metrics
                .callbacks
                .with_label_values(&[outcome.label()])
                .inc();
            let hash = &job.hash;
            match &outcome {
                crate::callback::Outcome::Delivered => tracing::info!(%hash, "callback delivered"),
                other => tracing::warn!(%hash, outcome = %other, "callback not delivered"),
            }
            if let Err(e) = queue
                .set_note(hash, "callback_status", &outcome.to_string())
                .await
            {
                tracing::warn!(%hash, error = %e, "callback outcome not recorded");
            }
        });
    }
}

/// Decodes a job's song and separates it into one MP3 per track. CPU-bound: runs on a blocking
/// thread.
fn separate(
    model: &Loaded,
    input: &[u8],
    opts: &JobOptions,
    progress: &dyn Progress,
) -> Result<Vec<(Track, Vec<u8>)>, Error> {
    let audio = stemsep_audio::decode(input, opts.max_duration)?;
    let mixes = model.tracks.iter().map(|&(_, s)| vec![s]).collect();
    let rate = model.separator.info().sample_rate;
    let mut sink = Mp3Sink::new(mixes, rate, opts.bitrate_kbps)?;
    model.separator.separate(audio, &mut sink, progress)?;
    let tracks = model.tracks.iter().map(|(t, _)| t.clone());
    Ok(tracks.zip(sink.finish()?).collect())
}

/// Pauses between attempts to reach Redis: doubling from [`BACKOFF_MIN`] up to [`BACKOFF_MAX`],
/// with jitter so that workers cut off together do not come back in step.
fn redis_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(BACKOFF_MIN)
        .with_max_delay(BACKOFF_MAX)
        .with_jitter()
        .without_max_times()
}

/// The claim loop's back-off between Redis reconnection attempts, logging the first failure of a
/// run of failures as a warning and the rest at debug level.
#[derive(Default)]
struct Backoff {
    delays: Option<ExponentialBackoff>,
}

impl Backoff {
    fn ok(&mut self) {
        if self.delays.take().is_some() {
            tracing::info!("Redis reachable again");
        }
    }

    async fn fail(&mut self, what: &str, e: &stemsep_common::Error, stop: &CancellationToken) {
        let delays = match &mut self.delays {
            Some(d) => {
                tracing::debug!(error = %e, "{what}; retrying");
                d
            }
            None => {
                tracing::warn!(error = %e, "{what}; retrying");
                self.delays.insert(redis_backoff().build())
            }
        };
        let pause = delays.next().unwrap_or(BACKOFF_MAX);
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Builds the whole worker from its command line and runs it until `stop` is cancelled: storage,
/// queue, the metrics endpoint and the claim loop.
pub async fn serve(args: WorkerArgs, stop: CancellationToken) -> Result<(), Error> {
    let config = args.runner_config()?;
    let queue = args.redis.queue()?;
    let storage = args.storage.storage().await?;
    let metrics = Metrics::new()?;
    let server = if args.metrics_bind.trim().is_empty() {
        None
    } else {
        let (server, addr) = crate::metrics::serve(metrics.clone(), args.metrics_bind.trim())?;
        tracing::info!(%addr, "metrics on http://{addr}/metrics");
        let handle = server.handle();
        tokio::spawn(server);
        Some(handle)
    };
    Runner::new(config, queue, storage, metrics)
        .run_until_stopped(stop)
        .await;
    if let Some(h) = server {
        h.stop(true).await;
    }
    Ok(())
}
