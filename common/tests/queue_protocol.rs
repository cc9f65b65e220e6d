//! The Redis queue protocol against a real redis-server: enqueue idempotency and the queue limit,
//! claim/complete, fencing (a claim that lost its job changes nothing), fail → back-off → retry,
//! permanent failures, dead letters, the reaper's lease-time rule, release, retention, and
//! survival of a Redis crash.

use std::time::Duration;

use stemsep_common::job::{Callback, Job, JobState, SongHash, Track, DEFAULT_MODEL};
use stemsep_common::queue::{Enqueued, Failed, Failure, Queue, QueueSettings};
use stemsep_testkit::{unique_prefix, RedisServer};

const BLOCK: Duration = Duration::from_millis(500);

fn queue(redis: &RedisServer, label: &str, lease: Duration, max_attempts: u32) -> Queue {
    queue_with(redis, label, |s| {
        s.lease = lease;
        s.max_attempts = max_attempts;
    })
}

fn queue_with(redis: &RedisServer, label: &str, tweak: impl FnOnce(&mut QueueSettings)) -> Queue {
    let mut settings = QueueSettings {
        url: redis.url(),
        prefix: unique_prefix(label),
        ..QueueSettings::default()
    };
    tweak(&mut settings);
    Queue::new(settings).unwrap()
}

/// Lets `d` of wall time go by (leases, back-offs and retention run on Redis's clock).
async fn pass(d: Duration) {
    tokio::time::sleep(d).await;
}

fn job(seed: u8) -> Job {
    Job::new(
        SongHash::compute(&[seed; 64], DEFAULT_MODEL),
        DEFAULT_MODEL.into(),
        None,
    )
}

#[tokio::test]
async fn enqueue_is_idempotent_until_replaced() {
    let redis = RedisServer::start().unwrap();
    let q = queue(&redis, "idem", Duration::from_secs(30), 3);
    let mut j = job(1);
    j.callback = Some(Callback {
        url: "http://example.com/cb".into(),
        data: serde_json::json!({"k": 1}),
    });

    assert_eq!(q.enqueue(&j, false).await.unwrap(), Enqueued::New);
    assert_eq!(
        q.enqueue(&j, false).await.unwrap(),
        Enqueued::Existing(JobState::Queued)
    );
    assert_eq!(
        q.enqueue(&j, true).await.unwrap(),
        Enqueued::Existing(JobState::Queued),
        "replace never doubles a queued job"
    );
    assert_eq!(q.waiting().await.unwrap(), vec![j.hash.to_string()]);

    let stored = q.job(&j.hash).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Queued);
    assert_eq!(stored.callback, j.callback);
    assert_eq!(stored.model, DEFAULT_MODEL);

    // Done: stays done unless replaced.
    let mut conn = q.blocking_conn(BLOCK).await.unwrap();
    let claim = q.claim(&mut conn, "w1", BLOCK).await.unwrap().unwrap();
    // The acknowledgement records the stems the worker stored (a six-source model's here).
    let six = Track::of_sources(&["vocals", "drums", "bass", "other", "guitar", "piano"]).unwrap();
    assert!(q.complete(&claim, &six).await.unwrap());
    assert_eq!(q.job(&j.hash).await.unwrap().unwrap().stems, six);
    assert_eq!(
        q.enqueue(&j, false).await.unwrap(),
        Enqueued::Existing(JobState::Done)
    );
    assert!(q.waiting().await.unwrap().is_empty());
    assert_eq!(q.enqueue(&j, true).await.unwrap(), Enqueued::New);
    assert_eq!(q.waiting().await.unwrap().len(), 1);
    assert_eq!(
        q.job(&j.hash).await.unwrap().unwrap().attempts,
        0,
        "a replaced job starts afresh"
    );
}

#[tokio::test]
async fn claim_heartbeat_complete() {
    let redis = RedisServer::start().unwrap();
    let q = queue(&redis, "claim", Duration::from_secs(30), 3);
    let mut conn = q.blocking_conn(BLOCK).await.unwrap();
    assert!(
        q.claim(&mut conn, "w1", BLOCK).await.unwrap().is_none(),
        "empty queue times out"
    );

    let (a, b) = (job(1), job(2));
    q.enqueue(&a, false).await.unwrap();
    q.enqueue(&b, false).await.unwrap();
    let claim = q.claim(&mut conn, "w1", BLOCK).await.unwrap().unwrap();
    assert_eq!(claim.job.hash, a.hash, "first in, first out");
    assert_eq!(claim.job.state, JobState::Running);
    assert_eq!(claim.job.attempts, 1);
    assert_eq!(q.depths().await.unwrap(), (1, 1, 0));
    assert!(q.heartbeat(&claim).await.unwrap());

    assert!(q.set_progress(&claim, 40).await.unwrap());
    assert_eq!(q.job(&a.hash).await.unwrap().unwrap().progress, 40);

    assert!(q.complete(&claim, &claim.job.tracks()).await.unwrap());
    let done = q.job(&a.hash).await.unwrap().unwrap();
    assert_eq!((done.state, done.progress), (JobState::Done, 100));
    assert_eq!(q.depths().await.unwrap(), (1, 0, 0));
    // Acknowledging twice is not finishing twice: only the first reports the change.
    assert!(!q.complete(&claim, &claim.job.tracks()).await.unwrap());
    let next = q.claim(&mut conn, "w1", BLOCK).await.unwrap().unwrap();
    assert!(next.token > claim.token, "tokens only grow");
}

#[tokio::test]
async fn transient_failures_wait_out_a_back_off_then_dead_letter() {
    let redis = RedisServer::start().unwrap();
    let q = queue_with(&redis, "fail", |s| {
        s.max_attempts = 2;
        s.retry_backoff = Duration::from_millis(300);
    });
    let j = job(3);
    q.enqueue(&j, false).await.unwrap();
    let mut conn = q.blocking_conn(BLOCK).await.unwrap();

    let c1 = q.claim(&mut conn, "w1", BLOCK).await.unwrap().unwrap();
    assert_eq!(
        q.fail(&c1, "storage unavailable", Failure::Transient)
            .await
            .unwrap(),
        Failed::Retrying(Duration::from_millis(300))
    );
    let after = q.job(&j.hash).await.unwrap().unwrap();
    assert_eq!(after.state, JobState::Queued);
    assert_eq!(after.error.as_deref(), Some("storage unavailable"));
    // Not pushed back at once: it waits in the delayed set, and promoting early moves nothing.
    assert_eq!(q.depths().await.unwrap(), (0, 0, 0));
    assert_eq!(q.delayed().await.unwrap(), vec![j.hash.to_string()]);
    assert_eq!(q.queued().await.unwrap(), 1);
    assert_eq!(q.promote_due(10).await.unwrap(), 0);
    assert!(q.claim(&mut conn, "w2", BLOCK).await.unwrap().is_none());
    pass(Duration::from_millis(400)).await;
    assert_eq!(q.promote_due(10).await.unwrap(), 1);
    assert!(q.delayed().await.unwrap().is_empty());

    let c2 = q.claim(&mut conn, "w2", BLOCK).await.unwrap().unwrap();
    assert_eq!(c2.job.attempts, 2);
    // A stale claim cannot fail a job another claim holds.
    assert_eq!(
        q.fail(&c1, "late", Failure::Transient).await.unwrap(),
        Failed::NotOurs
    );
    assert_eq!(
        q.fail(&c2, "storage unavailable again", Failure::Transient)
            .await
            .unwrap(),
        Failed::Dead
    );
    let dead = q.job(&j.hash).await.unwrap().unwrap();
    assert_eq!(dead.state, JobState::Failed);
    assert_eq!(q.dead_letters().await.unwrap(), vec![j.hash.to_string()]);
    assert_eq!(q.depths().await.unwrap(), (0, 0, 1));

    // Resubmitting a failed job only retries it when asked to, and takes it off the dead letters.
    assert_eq!(
        q.enqueue(&j, false).await.unwrap(),
        Enqueued::Existing(JobState::Failed)
    );
    assert_eq!(q.enqueue(&j, true).await.unwrap(), Enqueued::New);
    assert_eq!(q.depths().await.unwrap(), (1, 0, 0));
}

#[tokio::test]
async fn a_permanent_failure_is_dead_lettered_at_once() {
    let redis = RedisServer::start().unwrap();
    let q = queue(&redis, "permanent", Duration::from_secs(30), 3);
    let j = job(8);
    q.enqueue(&j, false).await.unwrap();
    let mut conn = q.blocking_conn(BLOCK).await.unwrap();
    let c = q.claim(&mut conn, "w1", BLOCK).await.unwrap().unwrap();
    assert_eq!(
        q.fail(&c, "not decodable audio", Failure::Permanent)
            .await
            .unwrap(),
        Failed::Dead
    );
    let dead = q.job(&j.hash).await.unwrap().unwrap();
    assert_eq!((dead.state, dead.attempts), (JobState::Failed, 1));
    assert_eq!(dead.error.as_deref(), Some("not decodable audio"));
    assert!(q.delayed().await.unwrap().is_empty());
    assert_eq!(q.depths().await.unwrap(), (0, 0, 1));
}

#[test]
fn backoffs_double_up_to_the_cap() {
    let s = QueueSettings {
        retry_backoff: Duration::from_secs(30),
        ..QueueSettings::default()
    };
    assert_eq!(s.backoff(1), Duration::from_secs(30));
    assert_eq!(s.backoff(2), Duration::from_secs(60));
    assert_eq!(s.backoff(3), Duration::from_secs(120));
    assert_eq!(s.backoff(40), stemsep_common::queue::RETRY_MAX);
}

#[tokio::test]
async fn the_reaper_waits_a_whole_lease_however_many_reapers_look() {
    let redis = RedisServer::start().unwrap();
    let lease = Duration::from_millis(1500);
    let q = queue(&redis, "reap", lease, 3);
    // A second worker's reaper: same keys, its own connection.
    let other = Queue::new(q.settings().clone()).unwrap();
    let j = job(4);
    q.enqueue(&j, false).await.unwrap();
    let mut conn = q.blocking_conn(BLOCK).await.unwrap();
    let lost = q.claim(&mut conn, "w-dies", BLOCK).await.unwrap().unwrap();

    // While the lease lives, the reaper leaves the job alone.
    assert_eq!(q.reap().await.unwrap().requeued, 0);
    pass(lease + Duration::from_millis(200)).await;
    // Lease gone: noted, but two reapers' passes in a row are still not a lease time.
    assert_eq!(q.reap().await.unwrap().requeued, 0);
    assert_eq!(other.reap().await.unwrap().requeued, 0);
    assert_eq!(q.depths().await.unwrap(), (0, 1, 0));
    pass(lease + Duration::from_millis(200)).await;
    assert_eq!(other.reap().await.unwrap().requeued, 1);
    assert_eq!(q.depths().await.unwrap(), (1, 0, 0));
    let back = q.job(&j.hash).await.unwrap().unwrap();
    assert_eq!(back.state, JobState::Queued);
    assert!(back.error.unwrap().contains("lease"));

    let again = q.claim(&mut conn, "w2", BLOCK).await.unwrap().unwrap();
    assert_eq!(again.job.attempts, 2);
    // The lost worker, back from wherever it was, can change nothing.
    assert!(!q.heartbeat(&lost).await.unwrap());
    assert!(!q.set_progress(&lost, 99).await.unwrap());
    assert!(!q.complete(&lost, &lost.job.tracks()).await.unwrap());
    assert_eq!(
        q.fail(&lost, "late", Failure::Permanent).await.unwrap(),
        Failed::NotOurs
    );
    assert!(!q.release(&lost).await.unwrap());
    let j2 = q.job(&j.hash).await.unwrap().unwrap();
    assert_eq!(
        (j2.state, j2.progress, j2.attempts),
        (JobState::Running, 0, 2)
    );
    assert!(q.complete(&again, &again.job.tracks()).await.unwrap());
}

#[tokio::test]
async fn the_reaper_dead_letters_a_lost_last_attempt() {
    let redis = RedisServer::start().unwrap();
    let lease = Duration::from_millis(200);
    let q = queue(&redis, "reapdead", lease, 1);
    let j = job(5);
    q.enqueue(&j, false).await.unwrap();
    let mut conn = q.blocking_conn(BLOCK).await.unwrap();
    q.claim(&mut conn, "w-dies", BLOCK).await.unwrap().unwrap();
    pass(lease + Duration::from_millis(100)).await;
    assert!(q.reap().await.unwrap().dead.is_empty());
    pass(lease + Duration::from_millis(100)).await;
    assert_eq!(q.reap().await.unwrap().dead, vec![j.hash.clone()]);
    let dead = q.job(&j.hash).await.unwrap().unwrap();
    assert_eq!(dead.state, JobState::Failed);
    assert_eq!(q.dead_letters().await.unwrap(), vec![j.hash.to_string()]);
}

#[tokio::test]
async fn a_heartbeat_retakes_a_lapsed_lease_only_while_the_job_is_its_own() {
    let redis = RedisServer::start().unwrap();
    let lease = Duration::from_millis(300);
    let q = queue(&redis, "retake", lease, 3);
    let j = job(9);
    q.enqueue(&j, false).await.unwrap();
    let mut conn = q.blocking_conn(BLOCK).await.unwrap();
    let c = q.claim(&mut conn, "w1", BLOCK).await.unwrap().unwrap();
    let mut redis_conn = q.conn().await.unwrap();
    let lease_key = q.keys().lease(&j.hash);
    pass(lease + Duration::from_millis(100)).await;
    let there: bool = redis::AsyncCommands::exists(&mut redis_conn, &lease_key)
        .await
        .unwrap();
    assert!(!there, "the lease lapsed");
    // Nobody took the job meanwhile (as after a Redis outage): the owner renews its lease.
    assert!(q.heartbeat(&c).await.unwrap());
    let back: String = redis::AsyncCommands::get(&mut redis_conn, &lease_key)
        .await
        .unwrap();
    assert_eq!(back, c.token.to_string());
    assert!(q.complete(&c, &c.job.tracks()).await.unwrap());
    // Finished: no heartbeat brings a lease back.
    assert!(!q.heartbeat(&c).await.unwrap());
}

#[tokio::test]
async fn an_old_attempt_cannot_erase_a_resubmission() {
    let redis = RedisServer::start().unwrap();
    let q = queue(&redis, "resubmit", Duration::from_secs(30), 1);
    let mut first = job(10);
    first.callback = Some(Callback {
        url: "http://example.com/first".into(),
        data: serde_json::json!(1),
    });
    q.enqueue(&first, false).await.unwrap();
    let mut conn = q.blocking_conn(BLOCK).await.unwrap();
    let old = q.claim(&mut conn, "w-old", BLOCK).await.unwrap().unwrap();
    // The job fails for good while the old attempt is thought lost (here: failed by hand, as a
    // reaper would).
    assert_eq!(
        q.fail(&old, "worker lost", Failure::Transient)
            .await
            .unwrap(),
        Failed::Dead
    );
    // The client resubmits: a new record, queued again.
    let second = Job::new(
        first.hash.clone(),
        DEFAULT_MODEL.into(),
        Some(Callback {
            url: "http://example.com/second".into(),
            data: serde_json::json!(2),
        }),
    );
    assert_eq!(q.enqueue(&second, true).await.unwrap(), Enqueued::New);

    // The old attempt wakes up and finishes: refused, and the resubmission stays queued.
    assert!(!q.complete(&old, &old.job.tracks()).await.unwrap());
    assert!(!q.set_progress(&old, 50).await.unwrap());
    q.set_callback_status(&old.job, "delivered").await.unwrap();
    let record = q.job(&second.hash).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Queued);
    assert_eq!(record.upload, second.upload);
    assert_eq!(record.callback, second.callback);
    assert_eq!(record.callback_status, None, "the old note went nowhere");
    assert_eq!(q.waiting().await.unwrap(), vec![second.hash.to_string()]);

    let new = q.claim(&mut conn, "w-new", BLOCK).await.unwrap().unwrap();
    assert_eq!(new.job.attempts, 1);
    assert!(q.complete(&new, &new.job.tracks()).await.unwrap());
    q.set_callback_status(&new.job, "delivered").await.unwrap();
    assert_eq!(
        q.job(&second.hash).await.unwrap().unwrap().callback_status,
        Some("delivered".into())
    );
}

#[tokio::test]
async fn the_queue_limit_counts_waiting_and_delayed_jobs() {
    let redis = RedisServer::start().unwrap();
    let q = queue_with(&redis, "full", |s| s.max_queued = Some(2));
    let (a, b, c) = (job(11), job(12), job(13));
    assert_eq!(q.enqueue(&a, false).await.unwrap(), Enqueued::New);
    assert_eq!(q.enqueue(&b, false).await.unwrap(), Enqueued::New);
    assert_eq!(q.enqueue(&c, false).await.unwrap(), Enqueued::Full);
    assert!(q.job(&c.hash).await.unwrap().is_none(), "nothing written");
    // A song already queued is still answered as such.
    assert_eq!(
        q.enqueue(&a, false).await.unwrap(),
        Enqueued::Existing(JobState::Queued)
    );
    // A job waiting out a back-off still counts.
    let mut conn = q.blocking_conn(BLOCK).await.unwrap();
    let claim = q.claim(&mut conn, "w1", BLOCK).await.unwrap().unwrap();
    assert_eq!(q.enqueue(&c, false).await.unwrap(), Enqueued::New);
    q.fail(&claim, "storage down", Failure::Transient)
        .await
        .unwrap();
    assert_eq!(q.queued().await.unwrap(), 3);
    assert_eq!(q.enqueue(&job(14), false).await.unwrap(), Enqueued::Full);
}

#[tokio::test]
async fn finished_jobs_expire_after_their_retention() {
    let redis = RedisServer::start().unwrap();
    let retention = Duration::from_millis(300);
    let q = queue_with(&redis, "expiry", |s| {
        s.retention = Some(retention);
        s.max_attempts = 1;
    });
    let (done, failed, resubmitted) = (job(15), job(16), job(17));
    let mut conn = q.blocking_conn(BLOCK).await.unwrap();
    for j in [&done, &failed, &resubmitted] {
        q.enqueue(j, false).await.unwrap();
    }
    let c = q.claim(&mut conn, "w", BLOCK).await.unwrap().unwrap();
    assert!(q.complete(&c, &c.job.tracks()).await.unwrap());
    let c = q.claim(&mut conn, "w", BLOCK).await.unwrap().unwrap();
    q.fail(&c, "bad", Failure::Permanent).await.unwrap();
    let c = q.claim(&mut conn, "w", BLOCK).await.unwrap().unwrap();
    assert!(q.complete(&c, &c.job.tracks()).await.unwrap());
    assert!(q.due_for_expiry(10).await.unwrap().is_empty(), "not yet");
    pass(retention + Duration::from_millis(100)).await;
    // Resubmitted in the meantime: not finished, so not expired.
    assert_eq!(q.enqueue(&resubmitted, true).await.unwrap(), Enqueued::New);

    let due = q.due_for_expiry(10).await.unwrap();
    assert_eq!(due.len(), 3);
    let mut expired = Vec::new();
    for (h, ticket) in &due {
        if q.expire(h, ticket).await.unwrap() {
            expired.push(h.to_string());
        }
    }
    expired.sort();
    let mut want = vec![done.hash.to_string(), failed.hash.to_string()];
    want.sort();
    assert_eq!(expired, want);
    assert!(q.job(&done.hash).await.unwrap().is_none());
    assert!(q.job(&failed.hash).await.unwrap().is_none());
    assert!(q.dead_letters().await.unwrap().is_empty());
    assert_eq!(
        q.job(&resubmitted.hash).await.unwrap().unwrap().state,
        JobState::Queued
    );
    assert!(q.due_for_expiry(10).await.unwrap().is_empty());

    // A ticket from before a job finished again is stale.
    let c = q.claim(&mut conn, "w", BLOCK).await.unwrap().unwrap();
    assert!(q.complete(&c, &c.job.tracks()).await.unwrap());
    assert!(!q.expire(&resubmitted.hash, "1").await.unwrap());
    assert!(q.job(&resubmitted.hash).await.unwrap().is_some());
}

#[tokio::test]
async fn without_retention_nothing_expires() {
    let redis = RedisServer::start().unwrap();
    let q = queue(&redis, "keep", Duration::from_secs(30), 3);
    let j = job(18);
    q.enqueue(&j, false).await.unwrap();
    let mut conn = q.blocking_conn(BLOCK).await.unwrap();
    let c = q.claim(&mut conn, "w", BLOCK).await.unwrap().unwrap();
    assert!(q.complete(&c, &c.job.tracks()).await.unwrap());
    pass(Duration::from_millis(50)).await;
    assert!(q.due_for_expiry(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn release_hands_back_without_counting() {
    let redis = RedisServer::start().unwrap();
    let q = queue(&redis, "release", Duration::from_secs(30), 3);
    let j = job(6);
    q.enqueue(&j, false).await.unwrap();
    let mut conn = q.blocking_conn(BLOCK).await.unwrap();
    let c = q.claim(&mut conn, "w1", BLOCK).await.unwrap().unwrap();
    assert!(q.release(&c).await.unwrap());
    let back = q.job(&j.hash).await.unwrap().unwrap();
    assert_eq!((back.state, back.attempts), (JobState::Queued, 0));
    assert_eq!(q.depths().await.unwrap(), (1, 0, 0));
    let c = q.claim(&mut conn, "w2", BLOCK).await.unwrap().unwrap();
    assert_eq!(c.job.attempts, 1);
}

#[tokio::test]
async fn jobs_survive_a_redis_crash_and_the_queue_reconnects() {
    let mut redis = RedisServer::start().unwrap();
    let q = queue(&redis, "crash", Duration::from_secs(30), 3);
    let j = job(7);
    q.enqueue(&j, false).await.unwrap();
    q.ping().await.unwrap();

    redis.kill();
    assert!(
        q.ping().await.is_err(),
        "Redis down is an error, not a hang"
    );
    assert!(q.waiting().await.is_err());

    redis.start_again().unwrap();
    // The connection manager reconnects on the next commands.
    let mut ok = false;
    for _ in 0..50 {
        if q.ping().await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "queue reconnected after Redis came back");
    assert_eq!(
        q.waiting().await.unwrap(),
        vec![j.hash.to_string()],
        "nothing lost"
    );
}
