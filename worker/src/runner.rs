//! The worker loop: claim → fetch the input → separate → store the stems → acknowledge → callback.
//!
//! Delivery is at-least-once and completion exactly-once (see `stemsep_common::queue`): a claim
//! carries a fencing token; a [`heartbeat`] refreshes its lease every third of its lifetime and
//! cancels the attempt as soon as Redis says the job is no longer this claim's. Every worker also
//! runs the [`reaper`], which returns jobs past their back-off to the queue, gives the jobs of lost
//! workers to live ones and deletes jobs past their retention ([`retention`]). A failed attempt
//! is retried after a back-off when another attempt could succeed, and failed at once when the
//! song itself is at fault. Redis outages are waited out: the loop backs off, reconnects and goes
//! on. A stop request (SIGTERM) ends claiming; the job in hand gets a grace period to finish and
//! is handed back otherwise. What follows a job's end — its input deleted, its callback — is the
//! [`finish`] module's.

pub mod finish;
pub mod heartbeat;
pub mod reaper;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder, Retryable};
use bytes::Bytes;
use stemsep_audio::{Mp3Writer, StreamWriter};
use stemsep_common::job::{Job, JobState, Track};
use stemsep_common::output::{self, Kind, Rendition};
use stemsep_common::queue::{Claim, Failed, Queue};
use stemsep_common::storage::{ObjectKey, Storage};
use tokio_util::sync::CancellationToken;

use crate::callback::Notifier;
use stemsep_engine::{EncodeSink, EngineError, Progress, SeparateOptions, StemSink};

use crate::config::{JobOptions, RunnerConfig, WorkerArgs};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::models::{Loaded, Models};
use finish::Finisher;
use heartbeat::Heartbeat;
use reaper::Reaper;

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
    finisher: Finisher,
    metrics: Arc<Metrics>,
}

/// What became of one claimed job.
enum Ending {
    /// Every stem is stored: the job's stems, as the API lists them.
    Separated(Vec<Track>),
    Failed(Error),
    HandedBack,
    /// The job stopped being ours while the attempt ran.
    Lost,
}

impl Ending {
    fn of(result: Result<Vec<Track>, Error>) -> Self {
        match result {
            Ok(tracks) => Ending::Separated(tracks),
            Err(Error::Lost) => Ending::Lost,
            Err(e) => Ending::Failed(e),
        }
    }
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
        let finisher = Finisher::new(queue.clone(), storage.clone(), notifier, metrics.clone());
        Runner {
            config,
            queue,
            storage,
            models,
            finisher,
            metrics,
        }
    }

    /// Claims and runs jobs until `stop` is cancelled, then finishes or hands back the current
    /// job, waits for pending callbacks (up to the grace period) and returns.
    pub async fn run_until_stopped(&self, stop: CancellationToken) {
        let lease = self.queue.settings().lease;
        let reaper = Reaper {
            queue: self.queue.clone(),
            storage: self.storage.clone(),
            finisher: self.finisher.clone(),
            metrics: self.metrics.clone(),
        };
        let reaper = tokio::spawn(reaper.run(
            (lease / 4).max(Duration::from_millis(250)),
            stop.child_token(),
        ));
        tracing::info!(worker = %self.config.worker_id, "worker started");
        self.announce_models(&stop).await;
        let mut backoff = Backoff::default();
        let mut blocking = None;
        while !stop.is_cancelled() {
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
                    self.run_claim(claim, &stop).await;
                }
                Err(e) => {
                    // A fresh connection after any error: the old one may be dead or desynced.
                    blocking = None;
                    backoff.fail("claim failed", &e, &stop).await;
                }
            }
        }
        tracing::info!("stop requested: no more claims");
        self.finisher.drain(self.config.grace).await;
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

    /// Runs one claimed job to its end: acknowledged, failed, handed back on stop, or given up
    /// when it stopped being ours.
    async fn run_claim(&self, claim: Claim, stop: &CancellationToken) {
        let started = Instant::now();
        let hash = claim.job.hash.clone();
        self.metrics.jobs_claimed.inc();
        tracing::info!(%hash, model = %claim.job.model, attempt = claim.job.attempts, token = claim.token, "job claimed");
        let lease = self.queue.settings().lease;
        let lost = CancellationToken::new();
        let _heartbeat =
            Heartbeat::start(self.queue.clone(), claim.clone(), lease / 3, lost.clone());

        let work = self.attempt(&claim, &lost);
        tokio::pin!(work);
        let ending = tokio::select! {
            r = &mut work => Ending::of(r),
            _ = lost.cancelled() => Ending::Lost,
            _ = stop.cancelled() => {
                tracing::info!(%hash, grace_secs = self.config.grace.as_secs(), "stop requested: finishing the current job");
                let finish = async {
                    tokio::select! {
                        r = &mut work => Ending::of(r),
                        _ = lost.cancelled() => Ending::Lost,
                    }
                };
                tokio::time::timeout(self.config.grace, finish)
                    .await
                    .unwrap_or(Ending::HandedBack)
            }
        };
        // Dropping the attempt leaves its separation thread running only until its next block:
        // the sink sees `lost` and stops it.
        lost.cancel();

        match ending {
            Ending::Separated(tracks) => {
                match self
                    .persist("acknowledge", || self.queue.complete(&claim, &tracks))
                    .await
                {
                    Some(true) => {
                        self.metrics.jobs_done.inc();
                        self.metrics
                            .job_seconds
                            .observe(started.elapsed().as_secs_f64());
                        tracing::info!(%hash, secs = started.elapsed().as_secs_f64(), "job done");
                        let mut job = claim.job.clone();
                        job.stems = tracks;
                        self.finisher.finished(job, JobState::Done, None);
                    }
                    Some(false) => self.lost(&claim, "separated, but not acknowledged"),
                    None => {}
                }
            }
            Ending::Failed(e) => {
                let reason = e.to_string();
                let failure = e.failure();
                self.metrics.jobs_failed.inc();
                tracing::warn!(%hash, attempt = claim.job.attempts, ?failure, error = %reason, "job attempt failed");
                match self
                    .persist("record the failure", || {
                        self.queue.fail(&claim, &reason, failure)
                    })
                    .await
                {
                    Some(Failed::Retrying(after)) => {
                        self.metrics.jobs_retried.inc();
                        tracing::info!(%hash, retry_in_secs = after.as_secs_f64(), "job will be retried after a back-off");
                    }
                    Some(Failed::Dead) => {
                        self.metrics.jobs_dead.inc();
                        tracing::error!(%hash, error = %reason, "job failed for good: dead-lettered");
                        self.finisher
                            .finished(claim.job.clone(), JobState::Failed, Some(reason));
                    }
                    Some(Failed::NotOurs) => self.lost(&claim, "failed, but not recorded"),
                    None => {}
                }
            }
            Ending::HandedBack => match self
                .persist("hand back", || self.queue.release(&claim))
                .await
            {
                Some(true) => {
                    self.metrics.jobs_released.inc();
                    tracing::warn!(%hash, "job not finished within the grace period: handed back");
                }
                Some(false) => self.lost(&claim, "not handed back"),
                None => {}
            },
            Ending::Lost => self.lost(&claim, "attempt abandoned"),
        }
    }

    /// Counts and logs an attempt whose job turned out to be another's.
    fn lost(&self, claim: &Claim, what: &str) {
        self.metrics.jobs_lost.inc();
        tracing::warn!(hash = %claim.job.hash, token = claim.token, "{what}: the job is no longer this worker's (taken back or resubmitted)");
    }

    /// One attempt at a job, up to and including storing its stems and recording which they are.
    /// Stops with [`Error::Lost`] once `lost` is cancelled, and cancels it when a progress write
    /// finds the job gone.
    async fn attempt(&self, claim: &Claim, lost: &CancellationToken) -> Result<Vec<Track>, Error> {
        let hash = &claim.job.hash;
        let input = match self.storage.get(&ObjectKey::input(&claim.job)).await {
            Ok(bytes) => bytes,
            Err(stemsep_common::Error::NotFound(what)) => return Err(Error::InputGone(what)),
            Err(e) => return Err(e.into()),
        };
        let model = self.models.get(&claim.job.model).await?;

        // Progress leaves the engine's thread through a watch channel, so Redis sees only the
        // latest value and never slows the engine down.
        let (tx, mut rx) = tokio::sync::watch::channel(0u8);
        let queue = self.queue.clone();
        let progress_claim = claim.clone();
        let progress_lost = lost.clone();
        let forward = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let p = *rx.borrow_and_update();
                match queue.set_progress(&progress_claim, p).await {
                    Ok(true) => {}
                    Ok(false) => progress_lost.cancel(),
                    Err(e) => {
                        tracing::debug!(hash = %progress_claim.job.hash, error = %e, "progress not recorded")
                    }
                }
            }
        });
        let opts = self.config.separate.clone();
        let job = claim.job.clone();
        let segment_seconds = self.metrics.segment_seconds.clone();
        let cancel = lost.clone();
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
            separate(&model, &job, &input, &opts, &progress, &cancel)
        })
        .await;
        // The last progress write must land before the acknowledgement (or failure) resets it.
        let _ = forward.await;
        let separated = separated.map_err(|e| Error::Task(e.to_string()))??;
        let sources: Vec<Track> = separated.masters.iter().map(|(t, _)| t.clone()).collect();
        // Masters first: a job's MP3 in storage means its masters are there too.
        let keyed = separated
            .masters
            .iter()
            .map(|(t, bytes)| (ObjectKey::master(hash, t), bytes))
            .chain(
                separated
                    .mp3s
                    .iter()
                    .map(|(t, bytes)| (ObjectKey::stem(hash, t), bytes)),
            );
        for (key, bytes) in keyed {
            if lost.is_cancelled() {
                return Err(Error::Lost);
            }
            self.storage.put(&key, bytes.clone()).await?;
        }
        self.make_ready(claim, separated.masters, lost).await?;
        Ok(sources)
    }

    /// Makes the files the request asked to have ready besides the MP3s (FLAC, WAV) from the
    /// masters just stored, as a download would.
    async fn make_ready(
        &self,
        claim: &Claim,
        masters: Vec<(Track, Bytes)>,
        lost: &CancellationToken,
    ) -> Result<(), Error> {
        let job = &claim.job;
        let mut wanted: Vec<Rendition> = Vec::new();
        for &kind in job.output.ready.iter().filter(|&&k| k != Kind::Mp3) {
            for track in job.tracks() {
                wanted.push(job.output.rendition(&track, kind)?);
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let sources: Vec<Track> = masters.iter().map(|(t, _)| t.clone()).collect();
        let made = tokio::task::spawn_blocking(move || -> Result<Vec<_>, Error> {
            let master = |part: &Track| {
                masters
                    .iter()
                    .find(|(t, _)| t == part)
                    .map(|(_, bytes)| bytes.clone())
                    .ok_or_else(|| stemsep_common::Error::NotFound(format!("master of {part}")))
            };
            wanted
                .into_iter()
                .map(|r| {
                    let bytes = output::render(&r, &sources, master)?;
                    Ok((r, bytes))
                })
                .collect()
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
        for (rendition, bytes) in made {
            if lost.is_cancelled() {
                return Err(Error::Lost);
            }
            output::store(
                &self.queue,
                &*self.storage,
                &job.hash,
                &rendition,
                bytes.into(),
            )
            .await?;
        }
        Ok(())
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
}

/// A sink that stops the song once the attempt is cancelled: the engine checks it at every
/// block, so a worker that lost its job stops computing within a segment or so.
struct Cancellable<'a, S> {
    inner: S,
    cancel: &'a CancellationToken,
}

impl<S: StemSink> StemSink for Cancellable<'_, S> {
    fn push(&mut self, block: &[Vec<Vec<f32>>]) -> Result<(), EngineError> {
        if self.cancel.is_cancelled() {
            return Err(EngineError::Internal("attempt cancelled".into()));
        }
        self.inner.push(block)
    }
}

/// What one separation leaves: the lossless master of every model source (API order) and the
/// MP3 of every track of the job.
struct Separated {
    masters: Vec<(Track, Bytes)>,
    mp3s: Vec<(Track, Bytes)>,
}

/// Decodes a job's song and separates it, streaming every source into its master and every
/// track of the job (a stem, or `no_<stem>`) into its MP3. CPU-bound: runs on a blocking thread.
fn separate(
    model: &Loaded,
    job: &Job,
    input: &[u8],
    opts: &JobOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Separated, Error> {
    let audio = stemsep_audio::decode(input, opts.max_duration)?;
    let rate = model.separator.info().sample_rate;
    let sources: Vec<Track> = model.tracks.iter().map(|(t, _)| t.clone()).collect();
    let index = |t: &Track| model.tracks.iter().find(|(s, _)| s == t).map(|&(_, i)| i);
    let tracks = job.tracks();
    let mut outputs = Vec::with_capacity(tracks.len() + sources.len());
    for track in &tracks {
        let parts = output::parts(track, &sources).ok_or_else(|| {
            EngineError::Input(format!("model {} gives no track {track}", job.model))
        })?;
        let writer = Mp3Writer::new(rate, job.output.mp3_kbps)?;
        outputs.push((
            parts.iter().filter_map(index).collect(),
            StreamWriter::Mp3(writer),
        ));
    }
    for &(_, i) in &model.tracks {
        outputs.push((
            vec![i],
            StreamWriter::Flac(Box::new(stemsep_audio::master_writer(rate)?)),
        ));
    }
    let mut sink = Cancellable {
        inner: EncodeSink::new(outputs),
        cancel,
    };
    let options = SeparateOptions {
        shifts: job.shifts as usize,
        // One seed for every job: the same song and shifts give the same stems on any worker.
        seed: 0,
        overlap: None,
    };
    let separated = model
        .separator
        .separate_with(audio, &options, &mut sink, progress);
    if cancel.is_cancelled() {
        return Err(Error::Lost);
    }
    separated?;
    let mut files: Vec<Bytes> = sink.inner.finish()?.into_iter().map(Bytes::from).collect();
    let masters = files.split_off(tracks.len());
    Ok(Separated {
        masters: sources.into_iter().zip(masters).collect(),
        mp3s: tracks.into_iter().zip(files).collect(),
    })
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

/// Builds the whole worker from its command line, already validated into `config`, and runs it
/// until `stop` is cancelled: storage, queue, the metrics endpoint and the claim loop.
pub async fn serve(
    args: WorkerArgs,
    config: RunnerConfig,
    stop: CancellationToken,
) -> Result<(), Error> {
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
