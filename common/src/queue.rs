//! The whole Redis protocol, at-least-once: every accepted song is separated even if workers die.
//!
//! * enqueue — job record + `LPUSH toWorker` in one Lua script (idempotent per song hash);
//! * claim — `BLMOVE toWorker processing` on a dedicated connection, then a lease key with a TTL
//!   that the worker's heartbeat refreshes;
//! * ack ([`Queue::complete`]) — after the stems are stored: state done, `LREM processing`;
//! * [`Queue::reap`] — any worker returns hashes whose lease has gone to `toWorker`; after
//!   `max_attempts` claims a job is failed and moved to the dead-letter list.
//!
//! A lease is written just after `BLMOVE` returns, so a hash can sit in `processing` without one for
//! a moment; the reaper therefore only acts on a hash it has found lease-less on two passes.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncCommands, AsyncConnectionConfig, Script};
use tokio::sync::OnceCell;

use crate::job::{unix_now, Callback, Job, JobState, SongHash, Track};
use crate::{Error, Result};

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
    /// The list of hashes that failed `max_attempts` times.
    pub fn dead_letter(&self) -> String {
        format!("{}deadLetter", self.prefix)
    }
    /// The bounded list of log lines.
    pub fn logging(&self) -> String {
        format!("{}logging", self.prefix)
    }
    /// The job record (a Redis hash).
    pub fn job(&self, h: &SongHash) -> String {
        format!("{}job:{h}", self.prefix)
    }
    /// The lease key; its value is the holding worker's id.
    pub fn lease(&self, h: &SongHash) -> String {
        format!("{}lease:{h}", self.prefix)
    }
    /// The models workers announce: a hash of name → [`stemsep_manifest::ModelCard`] JSON.
    pub fn models(&self) -> String {
        format!("{}models", self.prefix)
    }

    /// Marks a lease-less hash seen by the reaper once.
    fn suspect(&self, h: &SongHash) -> String {
        format!("{}suspect:{h}", self.prefix)
    }
}

/// How `enqueue` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// A new job is waiting in `toWorker`.
    New,
    /// A job for this hash already exists in this state; nothing was added.
    Existing(JobState),
}

/// What the reaper did on one pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    /// Jobs returned to `toWorker`.
    pub requeued: u32,
    /// Jobs moved to the dead-letter list.
    pub dead: u32,
}

/// Outcome of [`Queue::fail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// Returned to `toWorker` for another attempt.
    Retrying,
    /// Out of attempts: state failed, in the dead-letter list.
    Dead,
    /// The lease was no longer ours (another worker holds the job); nothing changed.
    NotOurs,
}

/// Connection settings for [`Queue`].
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// `redis://host:port/db`.
    pub url: String,
    /// Key prefix (see [`Keys`]).
    pub prefix: String,
    /// Lease time-to-live; a worker silent this long loses its job.
    pub lease: Duration,
    /// Claims after which a job is dead-lettered.
    pub max_attempts: u32,
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
            command_timeout: Duration::from_secs(2),
        }
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

/// A job claimed by this worker; hand it back through [`Queue::complete`] or [`Queue::fail`].
#[derive(Debug, Clone)]
pub struct Claim {
    /// The job as it was when claimed (attempts already counts this claim).
    pub job: Job,
    /// The worker id that holds the lease.
    pub worker: String,
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
    /// changes. `replace` re-enqueues a done or failed job (its stems were removed, or the client
    /// retries a failure).
    pub async fn enqueue(&self, job: &Job, replace: bool) -> Result<Enqueued> {
        let script = Script::new(
            r"local state = redis.call('HGET', KEYS[1], 'state')
              if state == 'queued' or state == 'running' then return state end
              if (state == 'done' or state == 'failed') and ARGV[1] == '0' then return state end
              redis.call('DEL', KEYS[1])
              redis.call('HSET', KEYS[1], unpack(ARGV, 3))
              redis.call('LPUSH', KEYS[2], ARGV[2])
              return 'new'",
        );
        let mut inv = script.key(self.keys.job(&job.hash));
        inv.key(self.keys.to_worker())
            .arg(if replace { "1" } else { "0" })
            .arg(job.hash.as_str());
        for (k, v) in job_fields(job) {
            inv.arg(k).arg(v);
        }
        let mut c = self.conn().await?;
        let answer: String = inv.invoke_async(&mut c).await?;
        Ok(if answer == "new" {
            Enqueued::New
        } else {
            Enqueued::Existing(answer.parse()?)
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
    /// `processing` and takes its lease for `worker`.
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
        let script = Script::new(
            r"redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
              if redis.call('EXISTS', KEYS[1]) == 0 then
                redis.call('DEL', KEYS[2])
                redis.call('LREM', KEYS[3], 1, ARGV[4])
                return -1
              end
              redis.call('HSET', KEYS[1], 'state', 'running', 'progress', '0', 'updated_at', ARGV[3], 'worker', ARGV[1])
              return redis.call('HINCRBY', KEYS[1], 'attempts', 1)",
        );
        let mut c = self.conn().await?;
        let attempts: i64 = script
            .key(self.keys.job(&hash))
            .key(self.keys.lease(&hash))
            .key(self.keys.processing())
            .arg(worker)
            .arg(self.settings.lease.as_millis() as u64)
            .arg(unix_now())
            .arg(hash.as_str())
            .invoke_async(&mut c)
            .await?;
        if attempts < 0 {
            tracing::warn!(%hash, "queued hash had no job record; dropped");
            return Ok(None);
        }
        match self.job(&hash).await? {
            Some(job) => Ok(Some(Claim {
                job,
                worker: worker.to_owned(),
            })),
            None => Ok(None),
        }
    }

    /// Refreshes the lease; `false` means another worker holds it now.
    pub async fn heartbeat(&self, claim: &Claim) -> Result<bool> {
        let script = Script::new(
            r"local owner = redis.call('GET', KEYS[1])
              if owner == ARGV[1] or not owner then
                redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
                return 1
              end
              return 0",
        );
        let mut c = self.conn().await?;
        let ok: i64 = script
            .key(self.keys.lease(&claim.job.hash))
            .arg(&claim.worker)
            .arg(self.settings.lease.as_millis() as u64)
            .invoke_async(&mut c)
            .await?;
        Ok(ok == 1)
    }

    /// Records progress (0–100) in the job record.
    pub async fn set_progress(&self, hash: &SongHash, percent: u8) -> Result<()> {
        let mut c = self.conn().await?;
        let _: () = c
            .hset_multiple(
                self.keys.job(hash),
                &[
                    ("progress", percent.min(100).to_string()),
                    ("updated_at", unix_now().to_string()),
                ],
            )
            .await?;
        Ok(())
    }

    /// Sets a free-text field of the job record (`error`, `callback_status`).
    pub async fn set_note(&self, hash: &SongHash, field: &'static str, text: &str) -> Result<()> {
        let mut c = self.conn().await?;
        let _: () = c.hset(self.keys.job(hash), field, text).await?;
        Ok(())
    }

    /// Acknowledges a job whose stems are all stored: state done, off `processing` (and off
    /// `toWorker`, should a reaper have requeued it meanwhile), lease released.
    pub async fn complete(&self, claim: &Claim) -> Result<()> {
        let script = Script::new(
            r"redis.call('HSET', KEYS[1], 'state', 'done', 'progress', '100', 'updated_at', ARGV[3])
              redis.call('HDEL', KEYS[1], 'error')
              redis.call('LREM', KEYS[2], 0, ARGV[1])
              redis.call('LREM', KEYS[3], 0, ARGV[1])
              if redis.call('GET', KEYS[4]) == ARGV[2] then redis.call('DEL', KEYS[4]) end
              return 1",
        );
        let h = &claim.job.hash;
        let mut c = self.conn().await?;
        let _: i64 = script
            .key(self.keys.job(h))
            .key(self.keys.processing())
            .key(self.keys.to_worker())
            .key(self.keys.lease(h))
            .arg(h.as_str())
            .arg(&claim.worker)
            .arg(unix_now())
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    /// Gives a job back after a failed attempt: retried while attempts remain, else failed and
    /// dead-lettered. `reason` lands in the job record either way.
    pub async fn fail(&self, claim: &Claim, reason: &str) -> Result<Failed> {
        let h = &claim.job.hash;
        let mut c = self.conn().await?;
        let answer: String = requeue_script()
            .key(self.keys.job(h))
            .key(self.keys.processing())
            .key(self.keys.to_worker())
            .key(self.keys.dead_letter())
            .key(self.keys.lease(h))
            .arg(h.as_str())
            .arg(self.settings.max_attempts)
            .arg(unix_now())
            .arg(reason)
            .arg(&claim.worker)
            .invoke_async(&mut c)
            .await?;
        Ok(match answer.as_str() {
            "dead" => Failed::Dead,
            "requeued" => Failed::Retrying,
            _ => Failed::NotOurs,
        })
    }

    /// Hands a job back without counting the attempt (graceful shutdown mid-job).
    pub async fn release(&self, claim: &Claim) -> Result<()> {
        let script = Script::new(
            r"if redis.call('GET', KEYS[4]) ~= ARGV[2] then return 0 end
              redis.call('DEL', KEYS[4])
              if redis.call('LREM', KEYS[2], 1, ARGV[1]) == 0 then return 0 end
              redis.call('HSET', KEYS[1], 'state', 'queued', 'progress', '0', 'updated_at', ARGV[3])
              redis.call('HINCRBY', KEYS[1], 'attempts', -1)
              redis.call('RPUSH', KEYS[3], ARGV[1])
              return 1",
        );
        let h = &claim.job.hash;
        let mut c = self.conn().await?;
        let _: i64 = script
            .key(self.keys.job(h))
            .key(self.keys.processing())
            .key(self.keys.to_worker())
            .key(self.keys.lease(h))
            .arg(h.as_str())
            .arg(&claim.worker)
            .arg(unix_now())
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    /// One reaper pass over `processing`: a hash without a lease on two consecutive passes (at
    /// most `suspect_for` apart) belongs to a dead worker and is requeued or dead-lettered.
    pub async fn reap(&self, suspect_for: Duration) -> Result<Reaped> {
        let mut c = self.conn().await?;
        let claimed: Vec<String> = c.lrange(self.keys.processing(), 0, -1).await?;
        let mut out = Reaped::default();
        for raw in claimed {
            let Ok(h) = raw.parse::<SongHash>() else {
                continue;
            };
            let seen: String = Script::new(
                r"if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DEL', KEYS[2]) return 'alive' end
                  if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 'suspect' end
                  redis.call('DEL', KEYS[2])
                  return 'orphan'",
            )
            .key(self.keys.lease(&h))
            .key(self.keys.suspect(&h))
            .arg(suspect_for.as_millis() as u64)
            .invoke_async(&mut c)
            .await?;
            if seen != "orphan" {
                continue;
            }
            let answer: String = requeue_script()
                .key(self.keys.job(&h))
                .key(self.keys.processing())
                .key(self.keys.to_worker())
                .key(self.keys.dead_letter())
                .key(self.keys.lease(&h))
                .arg(h.as_str())
                .arg(self.settings.max_attempts)
                .arg(unix_now())
                .arg("worker lost (lease expired)")
                .arg("")
                .invoke_async(&mut c)
                .await?;
            match answer.as_str() {
                "requeued" => out.requeued += 1,
                "dead" => out.dead += 1,
                _ => {}
            }
        }
        Ok(out)
    }

    /// Hashes in the dead-letter list.
    pub async fn dead_letters(&self) -> Result<Vec<String>> {
        let mut c = self.conn().await?;
        Ok(c.lrange(self.keys.dead_letter(), 0, -1).await?)
    }
}

/// Shared by `fail` (ARGV[5] = our worker id: only our lease may be given back) and the reaper
/// (ARGV[5] = "": the lease is already gone). Retries go to the consuming end of `toWorker`.
fn requeue_script() -> Script {
    Script::new(
        r"local owner = redis.call('GET', KEYS[5])
          if ARGV[5] ~= '' and owner and owner ~= ARGV[5] then return 'notours' end
          if ARGV[5] == '' and owner then return 'alive' end
          if redis.call('LREM', KEYS[2], 1, ARGV[1]) == 0 then return 'gone' end
          redis.call('DEL', KEYS[5])
          local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
          if attempts >= tonumber(ARGV[2]) then
            redis.call('HSET', KEYS[1], 'state', 'failed', 'error', ARGV[4], 'updated_at', ARGV[3])
            redis.call('LPUSH', KEYS[4], ARGV[1])
            return 'dead'
          end
          redis.call('HSET', KEYS[1], 'state', 'queued', 'progress', '0', 'error', ARGV[4], 'updated_at', ARGV[3])
          redis.call('RPUSH', KEYS[3], ARGV[1])
          return 'requeued'",
    )
}

/// The `stems` field of a job record: comma-separated names.
pub fn stems_field(stems: &[Track]) -> String {
    stems.iter().map(Track::name).collect::<Vec<_>>().join(",")
}

fn job_fields(job: &Job) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("model", job.model.clone()),
        ("stems", stems_field(&job.stems)),
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
    f
}

fn job_from_fields(hash: &SongHash, fields: Vec<(String, String)>) -> Result<Job> {
    let mut job = Job::new(hash.clone(), String::new(), None);
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
            _ => {}
        }
    }
    Ok(job)
}
