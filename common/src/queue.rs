//! The whole Redis protocol, at-least-once: every accepted song is separated even if workers die,
//! and each job is finished by exactly one owner.
//!
//! * enqueue — job record + `LPUSH toWorker` in one Lua script (idempotent per song hash; refused
//!   when the queue is at its limit);
//! * claim — `BLMOVE toWorker processing` on a dedicated connection, then a fencing token (a
//!   counter, Kleppmann's fencing tokens) written to the job record's `owner` and to a lease key
//!   with a TTL that the worker's heartbeat refreshes;
//! * everything a worker does to its job afterwards — progress, [`Queue::complete`],
//!   [`Queue::fail`], [`Queue::release`], heartbeats — first checks that `owner` is still its
//!   token, so a worker that lost the job changes nothing, and only the one `complete` that
//!   changed the state reports it (and fires the callback);
//! * a failure is retried after a back-off, from the delayed set (`delayed`, sorted by due time;
//!   [`Queue::promote_due`] moves due jobs to `toWorker`), or failed at once when retrying
//!   cannot help; after `max_attempts` claims the job is failed and dead-lettered;
//! * [`Queue::reap`] — any worker takes back a hash that has been in `processing` without a lease
//!   for a whole lease time, judged by Redis's clock, however many reapers look;
//! * retention — finished jobs enter the `expiry` set; [`Queue::due_for_expiry`] and
//!   [`Queue::expire`] let a worker delete their objects, then their record and dead letter.
//!
//! The scripts themselves are in [`scripts`].

mod scripts;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncCommands, AsyncConnectionConfig};
use tokio::sync::OnceCell;

use crate::job::{Callback, Job, JobState, SongHash, Track};
use crate::output::Rendition;
use crate::{Error, Result};

/// Longest back-off before a retry, however many attempts came before.
pub const RETRY_MAX: Duration = Duration::from_secs(3600);

/// Redis key names. The lab fixes `toWorker` and `logging`; a prefix (empty by default) lets
/// tests and several deployments share one server.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (empty for the lab-compatible names).
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }
    /// The list of hashes waiting for a worker (`LPUSH` in, `BLMOVE` from the right out).
    pub fn to_worker(&self) -> String {
        format!("{}toWorker", self.prefix)
    }
    /// The list of hashes claimed by some worker.
    pub fn processing(&self) -> String {
        format!("{}processing", self.prefix)
    }
    /// The list of hashes that failed for good.
    pub fn dead_letter(&self) -> String {
        format!("{}deadLetter", self.prefix)
    }
    /// The sorted set of hashes waiting out a back-off; score: when it ends (Unix ms).
    pub fn delayed(&self) -> String {
        format!("{}delayed", self.prefix)
    }
    /// The sorted set of finished jobs; score: when their retention ends (Unix ms).
    pub fn expiry(&self) -> String {
        format!("{}expiry", self.prefix)
    }
    /// The bounded list of log lines.
    pub fn logging(&self) -> String {
        format!("{}logging", self.prefix)
    }
    /// The job record (a Redis hash).
    pub fn job(&self, h: &SongHash) -> String {
        format!("{}job:{h}", self.prefix)
    }
    /// The lease key; its value is the holding claim's fencing token.
    pub fn lease(&self, h: &SongHash) -> String {
        format!("{}lease:{h}", self.prefix)
    }
    /// The set of files made from a job's masters ([`crate::output::Rendition::slug`]s), so
    /// that retention can find them.
    pub fn files(&self, h: &SongHash) -> String {
        format!("{}files:{h}", self.prefix)
    }
    /// The models workers announce: a hash of name → [`stemsep_manifest::ModelCard`] JSON.
    pub fn models(&self) -> String {
        format!("{}models", self.prefix)
    }

    /// The counter fencing tokens are drawn from.
    fn fence(&self) -> String {
        format!("{}fence", self.prefix)
    }
    /// Hash → when (Unix ms) a reaper first found it in `processing` without a lease.
    fn orphans(&self) -> String {
        format!("{}orphans", self.prefix)
    }
}

/// How `enqueue` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// A new job is waiting in `toWorker`.
    New,
    /// A job for this hash already exists in this state; nothing was added.
    Existing(JobState),
    /// The queue holds [`QueueSettings::max_queued`] jobs already; nothing was added.
    Full,
}

/// What the reaper did on one pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// Jobs returned to `toWorker`.
    pub requeued: u32,
    /// Jobs failed for good and dead-lettered (their worker was lost on the last attempt).
    pub dead: Vec<SongHash>,
}

/// Whether a failed attempt may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Something outside the job went wrong (storage, a missing model): retry after a back-off.
    Transient,
    /// The job itself cannot succeed (undecodable song): fail it now.
    Permanent,
}

/// Outcome of [`Queue::fail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// In the delayed set; it returns to `toWorker` after this back-off.
    Retrying(Duration),
    /// Failed for good: state failed, in the dead-letter list.
    Dead,
    /// This claim no longer owns the job; nothing changed.
    NotOurs,
}

/// Connection settings for [`Queue`].
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// `redis://host:port/db`.
    pub url: String,
    /// Key prefix (see [`Keys`]).
    pub prefix: String,
    /// Lease time-to-live; a worker silent this long loses its lease, and a job lease-less for
    /// this long again is taken back.
    pub lease: Duration,
    /// Claims after which a job is dead-lettered.
    pub max_attempts: u32,
    /// Back-off before the first retry of a transient failure; doubled for each further attempt
    /// up to [`RETRY_MAX`].
    pub retry_backoff: Duration,
    /// How long a finished job (record, stems, dead letter) is kept; `None` keeps it forever.
    pub retention: Option<Duration>,
    /// Most jobs waiting (in `toWorker` or the delayed set) before `enqueue` answers
    /// [`Enqueued::Full`]; `None` for no limit.
    pub max_queued: Option<u64>,
    /// Response timeout for ordinary commands: Redis down must turn into an error quickly.
    pub command_timeout: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            url: "redis://127.0.0.1:6379".into(),
            prefix: String::new(),
            lease: Duration::from_secs(30),
            max_attempts: 3,
            retry_backoff: Duration::from_secs(30),
            retention: None,
            max_queued: None,
            command_timeout: Duration::from_secs(2),
        }
    }
}

impl QueueSettings {
    /// The back-off after failed attempt number `attempt` (1 for the first).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(20);
        self.retry_backoff
            .saturating_mul(1 << doublings)
            .min(RETRY_MAX)
    }

    fn retention_ms(&self) -> u64 {
        self.retention.map_or(0, |d| d.as_millis() as u64)
    }
}

/// A handle on the queue; cheap to clone, reconnects by itself after Redis restarts.
#[derive(Clone)]
pub struct Queue {
    client: redis::Client,
    conn: std::sync::Arc<OnceCell<ConnectionManager>>,
    keys: Keys,
    settings: QueueSettings,
}

/// A job claimed by this worker; finish it through [`Queue::complete`], [`Queue::fail`] or
/// [`Queue::release`].
#[derive(Debug, Clone)]
pub struct Claim {
    /// The job as it was when claimed (attempts already counts this claim).
    pub job: Job,
    /// The worker id that claimed it.
    pub worker: String,
    /// The claim's fencing token: the job is this claim's while its record's `owner` is this.
    pub token: u64,
}

impl Queue {
    /// A queue on `settings.url`. Does not connect yet: the first command does, so a service can
    /// start while Redis is down and answer 503 until it returns.
    pub fn new(settings: QueueSettings) -> Result<Self> {
        let client = redis::Client::open(settings.url.as_str())?;
        Ok(Queue {
            client,
            conn: Default::default(),
            keys: Keys::new(&settings.prefix),
            settings,
        })
    }

    /// The key names in use.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The settings in use.
    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// The shared auto-reconnecting connection.
    pub async fn conn(&self) -> Result<ConnectionManager> {
        let t = self.settings.command_timeout;
        let cm = self
            .conn
            .get_or_try_init(|| async {
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(t))
                    .set_response_timeout(Some(t))
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(self.client.clone(), cfg).await
            })
            .await?;
        Ok(cm.clone())
    }

    /// A dedicated connection for blocking commands, whose response timeout outlasts `block`
    /// (redis-rs' 500 ms default would cut every `BLMOVE` short).
    pub async fn blocking_conn(&self, block: Duration) -> Result<MultiplexedConnection> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.command_timeout))
            .set_response_timeout(Some(block + Duration::from_secs(5)));
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?)
    }

    /// `PING`: is Redis reachable?
    pub async fn ping(&self) -> Result<()> {
        let mut c = self.conn().await?;
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }

    /// Creates the job record and pushes the hash to `toWorker` atomically, unless a job for the
    /// hash is already queued, running or done (or failed, kept for status), in which case nothing
    /// changes, or the queue is full ([`QueueSettings::max_queued`]). `replace` re-enqueues a done
    /// or failed job (its stems were removed, or the client retries a failure), taking it off the
    /// dead-letter list.
    pub async fn enqueue(&self, job: &Job, replace: bool) -> Result<Enqueued> {
        let mut inv = scripts::ENQUEUE.key(self.keys.job(&job.hash));
        inv.key(self.keys.to_worker())
            .key(self.keys.delayed())
            .key(self.keys.dead_letter())
            .arg(if replace { "1" } else { "0" })
            .arg(job.hash.as_str())
            .arg(self.settings.max_queued.unwrap_or(0));
        for (k, v) in job_fields(job) {
            inv.arg(k).arg(v);
        }
        let mut c = self.conn().await?;
        let answer: String = inv.invoke_async(&mut c).await?;
        Ok(match answer.as_str() {
            "new" => Enqueued::New,
            "full" => Enqueued::Full,
            other => Enqueued::Existing(other.parse()?),
        })
    }

    /// The job record, if any.
    pub async fn job(&self, hash: &SongHash) -> Result<Option<Job>> {
        let mut c = self.conn().await?;
        let fields: Vec<(String, String)> = c.hgetall(self.keys.job(hash)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        job_from_fields(hash, fields).map(Some)
    }

    /// Hashes waiting in `toWorker`, as `LRANGE` lists them (newest first).
    pub async fn waiting(&self) -> Result<Vec<String>> {
        let mut c = self.conn().await?;
        Ok(c.lrange(self.keys.to_worker(), 0, -1).await?)
    }

    /// Hashes waiting out a back-off, soonest first.
    pub async fn delayed(&self) -> Result<Vec<String>> {
        let mut c = self.conn().await?;
        Ok(c.zrange(self.keys.delayed(), 0, -1).await?)
    }

    /// How many jobs are waiting out a back-off.
    pub async fn delayed_count(&self) -> Result<u64> {
        let mut c = self.conn().await?;
        Ok(c.zcard(self.keys.delayed()).await?)
    }

    /// Jobs waiting for a worker: in `toWorker` or the delayed set (what `max_queued` limits).
    pub async fn queued(&self) -> Result<u64> {
        let mut c = self.conn().await?;
        let (a, d): (u64, u64) = redis::pipe()
            .llen(self.keys.to_worker())
            .zcard(self.keys.delayed())
            .query_async(&mut c)
            .await?;
        Ok(a + d)
    }

    /// Lengths of `toWorker`, `processing` and the dead-letter list.
    pub async fn depths(&self) -> Result<(u64, u64, u64)> {
        let mut c = self.conn().await?;
        let (a, b, d): (u64, u64, u64) = redis::pipe()
            .llen(self.keys.to_worker())
            .llen(self.keys.processing())
            .llen(self.keys.dead_letter())
            .query_async(&mut c)
            .await?;
        Ok((a, b, d))
    }

    /// Waits up to `block` for a job on `blocking` (from [`Queue::blocking_conn`]), moves it to
    /// `processing`, and claims it for `worker` under a new fencing token.
    pub async fn claim(
        &self,
        blocking: &mut MultiplexedConnection,
        worker: &str,
        block: Duration,
    ) -> Result<Option<Claim>> {
        let hash: Option<String> = blocking
            .blmove(
                self.keys.to_worker(),
                self.keys.processing(),
                redis::Direction::Right,
                redis::Direction::Left,
                block.as_secs_f64(),
            )
            .await?;
        let Some(hash) = hash else { return Ok(None) };
        let Ok(hash) = hash.parse::<SongHash>() else {
            // Not ours to interpret: drop garbage rather than loop on it forever.
            let mut c = self.conn().await?;
            let _: i64 = c.lrem(self.keys.processing(), 1, &hash).await?;
            tracing::warn!(%hash, "dropped a malformed entry from the queue");
            return Ok(None);
        };
        let mut c = self.conn().await?;
        let (token, _attempts): (i64, i64) = scripts::CLAIM
            .key(self.keys.job(&hash))
            .key(self.keys.lease(&hash))
            .key(self.keys.processing())
            .key(self.keys.fence())
            .key(self.keys.orphans())
            .key(self.keys.delayed())
            .arg(worker)
            .arg(self.lease_ms())
            .arg(hash.as_str())
            .invoke_async(&mut c)
            .await?;
        if token < 0 {
            tracing::warn!(%hash, "dropped a queue entry whose job is not queued (no record, or finished already)");
            return Ok(None);
        }
        match self.job(&hash).await? {
            Some(job) => Ok(Some(Claim {
                job,
                worker: worker.to_owned(),
                token: token as u64,
            })),
            None => Ok(None),
        }
    }

    /// Refreshes the claim's lease (re-taking it if it lapsed while the claim still owns the
    /// job); `false` means the job is no longer this claim's.
    pub async fn heartbeat(&self, claim: &Claim) -> Result<bool> {
        let h = &claim.job.hash;
        let mut c = self.conn().await?;
        let ok: i64 = scripts::HEARTBEAT
            .key(self.keys.job(h))
            .key(self.keys.lease(h))
            .key(self.keys.orphans())
            .arg(claim.token)
            .arg(self.lease_ms())
            .arg(h.as_str())
            .invoke_async(&mut c)
            .await?;
        Ok(ok == 1)
    }

    /// Records progress (0–100) in the job record; `false` means the job is no longer this
    /// claim's (nothing written).
    pub async fn set_progress(&self, claim: &Claim, percent: u8) -> Result<bool> {
        let mut c = self.conn().await?;
        let ok: i64 = scripts::PROGRESS
            .key(self.keys.job(&claim.job.hash))
            .arg(claim.token)
            .arg(percent.min(100))
            .invoke_async(&mut c)
            .await?;
        Ok(ok == 1)
    }

    /// Records how the callback of `job` went (`callback_status`), unless the record now belongs
    /// to another submission of the song.
    pub async fn set_callback_status(&self, job: &Job, text: &str) -> Result<()> {
        let mut c = self.conn().await?;
        let _: i64 = scripts::NOTE
            .key(self.keys.job(&job.hash))
            .arg(job.upload.as_ref().map_or("", |u| u.as_str()))
            .arg("callback_status")
            .arg(text)
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    /// Acknowledges a job whose `stems` are all stored: state done, its stems recorded, off
    /// `processing`, lease released, expiry scheduled. `true` when this call finished the job;
    /// `false` when the claim no longer owned it (nothing changed: another worker has it, or a
    /// resubmission replaced the record).
    pub async fn complete(&self, claim: &Claim, stems: &[Track]) -> Result<bool> {
        let h = &claim.job.hash;
        let mut c = self.conn().await?;
        let done: i64 = scripts::COMPLETE
            .key(self.keys.job(h))
            .key(self.keys.processing())
            .key(self.keys.lease(h))
            .key(self.keys.orphans())
            .key(self.keys.expiry())
            .arg(h.as_str())
            .arg(claim.token)
            .arg(self.settings.retention_ms())
            .arg(stems_field(stems))
            .invoke_async(&mut c)
            .await?;
        Ok(done == 1)
    }

    /// Gives a job back after a failed attempt: a transient failure waits out a back-off in the
    /// delayed set while attempts remain; a permanent one, or the last attempt, is failed and
    /// dead-lettered. `reason` lands in the job record either way.
    pub async fn fail(&self, claim: &Claim, reason: &str, failure: Failure) -> Result<Failed> {
        let h = &claim.job.hash;
        let backoff = self.settings.backoff(claim.job.attempts);
        let mut c = self.conn().await?;
        let answer: String = scripts::FAIL
            .key(self.keys.job(h))
            .key(self.keys.processing())
            .key(self.keys.delayed())
            .key(self.keys.dead_letter())
            .key(self.keys.lease(h))
            .key(self.keys.orphans())
            .key(self.keys.expiry())
            .arg(h.as_str())
            .arg(claim.token)
            .arg(self.settings.max_attempts)
            .arg(reason)
            .arg(if failure == Failure::Permanent {
                "1"
            } else {
                "0"
            })
            .arg(backoff.as_millis() as u64)
            .arg(self.settings.retention_ms())
            .invoke_async(&mut c)
            .await?;
        Ok(match answer.as_str() {
            "dead" => Failed::Dead,
            "retrying" => Failed::Retrying(backoff),
            _ => Failed::NotOurs,
        })
    }

    /// Hands a job back without counting the attempt (graceful shutdown mid-job); `false` when
    /// the claim no longer owned it.
    pub async fn release(&self, claim: &Claim) -> Result<bool> {
        let h = &claim.job.hash;
        let mut c = self.conn().await?;
        let ok: i64 = scripts::RELEASE
            .key(self.keys.job(h))
            .key(self.keys.processing())
            .key(self.keys.to_worker())
            .key(self.keys.lease(h))
            .key(self.keys.orphans())
            .arg(h.as_str())
            .arg(claim.token)
            .invoke_async(&mut c)
            .await?;
        Ok(ok == 1)
    }

    /// One reaper pass over `processing`: a hash lease-less for a whole lease time (by Redis's
    /// clock, from the first pass of any reaper that saw it so) belongs to a lost worker and is
    /// requeued, or dead-lettered when out of attempts.
    pub async fn reap(&self) -> Result<Reaped> {
        let mut c = self.conn().await?;
        let claimed: Vec<String> = c.lrange(self.keys.processing(), 0, -1).await?;
        let mut out = Reaped::default();
        for raw in claimed {
            let Ok(h) = raw.parse::<SongHash>() else {
                continue;
            };
            let answer: String = scripts::REAP
                .key(self.keys.job(&h))
                .key(self.keys.processing())
                .key(self.keys.to_worker())
                .key(self.keys.dead_letter())
                .key(self.keys.lease(&h))
                .key(self.keys.orphans())
                .key(self.keys.expiry())
                .arg(h.as_str())
                .arg(self.lease_ms())
                .arg(self.settings.max_attempts)
                .arg("worker lost (its lease expired)")
                .arg("")
                .arg("")
                .arg(self.settings.retention_ms())
                .invoke_async(&mut c)
                .await?;
            match answer.as_str() {
                "requeued" => out.requeued += 1,
                "dead" => out.dead.push(h),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Moves up to `limit` jobs whose back-off is over from the delayed set to `toWorker`;
    /// returns how many.
    pub async fn promote_due(&self, limit: usize) -> Result<u64> {
        let mut c = self.conn().await?;
        Ok(scripts::PROMOTE
            .key(self.keys.delayed())
            .key(self.keys.to_worker())
            .arg(limit)
            .invoke_async(&mut c)
            .await?)
    }

    /// Up to `limit` finished jobs whose retention is over, each with the ticket
    /// [`Queue::expire`] needs.
    pub async fn due_for_expiry(&self, limit: usize) -> Result<Vec<(SongHash, String)>> {
        let mut c = self.conn().await?;
        let flat: Vec<String> = scripts::DUE
            .key(self.keys.expiry())
            .arg(limit)
            .invoke_async(&mut c)
            .await?;
        let mut out = Vec::new();
        for pair in flat.chunks_exact(2) {
            match pair[0].parse::<SongHash>() {
                Ok(h) => out.push((h, pair[1].clone())),
                Err(_) => {
                    let _: i64 = c.zrem(self.keys.expiry(), &pair[0]).await?;
                }
            }
        }
        Ok(out)
    }

    /// Deletes the record and dead letter of a job from [`Queue::due_for_expiry`] once the
    /// caller has deleted its objects; `true` if it was deleted. A job finished again since, or
    /// resubmitted, is left alone.
    pub async fn expire(&self, hash: &SongHash, ticket: &str) -> Result<bool> {
        let mut c = self.conn().await?;
        let answer: String = scripts::EXPIRE
            .key(self.keys.expiry())
            .key(self.keys.job(hash))
            .key(self.keys.dead_letter())
            .key(self.keys.files(hash))
            .arg(hash.as_str())
            .arg(ticket)
            .invoke_async(&mut c)
            .await?;
        Ok(answer == "expired")
    }

    /// Notes that `rendition` of `hash` was stored (before it is, so retention never misses one).
    pub async fn add_file(&self, hash: &SongHash, rendition: &Rendition) -> Result<()> {
        let mut c = self.conn().await?;
        let _: i64 = c.sadd(self.keys.files(hash), rendition.slug()).await?;
        Ok(())
    }

    /// The files made from `hash`'s masters; a stored name that is not a file's is skipped.
    pub async fn files(&self, hash: &SongHash) -> Result<Vec<Rendition>> {
        let mut c = self.conn().await?;
        let names: Vec<String> = c.smembers(self.keys.files(hash)).await?;
        Ok(names
            .iter()
            .filter_map(|n| Rendition::from_slug(n).ok())
            .collect())
    }

    /// Forgets the files of `hash` (after deleting them).
    pub async fn clear_files(&self, hash: &SongHash) -> Result<()> {
        let mut c = self.conn().await?;
        let _: i64 = c.del(self.keys.files(hash)).await?;
        Ok(())
    }

    /// Hashes in the dead-letter list.
    pub async fn dead_letters(&self) -> Result<Vec<String>> {
        let mut c = self.conn().await?;
        Ok(c.lrange(self.keys.dead_letter(), 0, -1).await?)
    }

    fn lease_ms(&self) -> u64 {
        self.settings.lease.as_millis() as u64
    }
}

/// The `stems` field of a job record: comma-separated names.
pub fn stems_field(stems: &[Track]) -> String {
    stems.iter().map(Track::name).collect::<Vec<_>>().join(",")
}

fn job_fields(job: &Job) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("model", job.model.clone()),
        ("stems", stems_field(&job.stems)),
        ("shifts", job.shifts.to_string()),
        ("output", job.output.field()),
        ("state", job.state.name().to_owned()),
        ("progress", job.progress.to_string()),
        ("attempts", job.attempts.to_string()),
        ("created_at", job.created_at.to_string()),
        ("updated_at", job.updated_at.to_string()),
    ];
    if let Some(cb) = &job.callback {
        f.push(("callback", serde_json::to_string(cb).unwrap_or_default()));
    }
    if let Some(e) = &job.error {
        f.push(("error", e.clone()));
    }
    if let Some(s) = &job.callback_status {
        f.push(("callback_status", s.clone()));
    }
    if let Some(u) = &job.upload {
        f.push(("upload", u.to_string()));
    }
    if let Some(t) = &job.two_stems {
        f.push(("two_stems", t.to_string()));
    }
    f
}

fn job_from_fields(hash: &SongHash, fields: Vec<(String, String)>) -> Result<Job> {
    let mut job = Job {
        hash: hash.clone(),
        model: String::new(),
        stems: Vec::new(),
        two_stems: None,
        shifts: 0,
        output: Default::default(),
        callback: None,
        upload: None,
        state: JobState::Queued,
        progress: 0,
        attempts: 0,
        error: None,
        callback_status: None,
        created_at: 0,
        updated_at: 0,
    };
    let num = |v: &str| {
        v.parse::<i64>()
            .map_err(|_| Error::Corrupt(format!("number {v:?}")))
    };
    for (k, v) in fields {
        match k.as_str() {
            "model" => job.model = v,
            "stems" => {
                job.stems = v
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::parse)
                    .collect::<Result<_>>()?
            }
            "state" => job.state = v.parse()?,
            "progress" => job.progress = num(&v)?.clamp(0, 100) as u8,
            "attempts" => job.attempts = num(&v)?.max(0) as u32,
            "created_at" => job.created_at = num(&v)?.max(0) as u64,
            "updated_at" => job.updated_at = num(&v)?.max(0) as u64,
            "callback" => {
                job.callback = Some(
                    serde_json::from_str::<Callback>(&v)
                        .map_err(|e| Error::Corrupt(e.to_string()))?,
                )
            }
            "error" => job.error = Some(v),
            "callback_status" => job.callback_status = Some(v),
            "upload" => job.upload = Some(v.parse()?),
            "two_stems" => job.two_stems = Some(v.parse()?),
            "shifts" => job.shifts = num(&v)?.max(0) as u32,
            "output" => job.output = crate::output::Settings::from_field(&v)?,
            _ => {}
        }
    }
    Ok(job)
}
