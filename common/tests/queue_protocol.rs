//! The Redis queue protocol against a real redis-server: enqueue idempotency, claim/complete,
//! fail → retry → dead letter, the reaper, release, and survival of a Redis crash.

use std::time::Duration;

use stemsep_common::job::{Callback, Job, JobState, SongHash, DEFAULT_MODEL};
use stemsep_common::queue::{Enqueued, Failed, Queue, QueueSettings};
use stemsep_testkit::{unique_prefix, RedisServer};

const BLOCK: Duration = Duration::from_millis(500);

fn queue(redis: &RedisServer, label: &str, lease: Duration, max_attempts: u32) -> Queue {
    Queue::new(QueueSettings {
        url: redis.url(),
        prefix: unique_prefix(label),
        lease,
        max_attempts,
        ..QueueSettings::default()
    })
    .unwrap()
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
    q.complete(&claim).await.unwrap();
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

    q.set_progress(&a.hash, 40).await.unwrap();
    assert_eq!(q.job(&a.hash).await.unwrap().unwrap().progress, 40);

    q.complete(&claim).await.unwrap();
    let done = q.job(&a.hash).await.unwrap().unwrap();
    assert_eq!((done.state, done.progress), (JobState::Done, 100));
    assert_eq!(q.depths().await.unwrap(), (1, 0, 0));
}

#[tokio::test]
async fn failures_retry_then_dead_letter() {
    let redis = RedisServer::start().unwrap();
    let q = queue(&redis, "fail", Duration::from_secs(30), 2);
    let j = job(3);
    q.enqueue(&j, false).await.unwrap();
    let mut conn = q.blocking_conn(BLOCK).await.unwrap();

    let c1 = q.claim(&mut conn, "w1", BLOCK).await.unwrap().unwrap();
    assert_eq!(
        q.fail(&c1, "decoder exploded").await.unwrap(),
        Failed::Retrying
    );
    let after = q.job(&j.hash).await.unwrap().unwrap();
    assert_eq!(after.state, JobState::Queued);
    assert_eq!(after.error.as_deref(), Some("decoder exploded"));

    let c2 = q.claim(&mut conn, "w2", BLOCK).await.unwrap().unwrap();
    assert_eq!(c2.job.attempts, 2);
    // A stale worker cannot fail a job another worker holds.
    assert_eq!(q.fail(&c1, "late").await.unwrap(), Failed::NotOurs);
    assert_eq!(
        q.fail(&c2, "decoder exploded again").await.unwrap(),
        Failed::Dead
    );
    let dead = q.job(&j.hash).await.unwrap().unwrap();
    assert_eq!(dead.state, JobState::Failed);
    assert_eq!(q.dead_letters().await.unwrap(), vec![j.hash.to_string()]);
    assert_eq!(q.depths().await.unwrap(), (0, 0, 1));

    // Resubmitting a failed job only retries it when asked to.
    assert_eq!(
        q.enqueue(&j, false).await.unwrap(),
        Enqueued::Existing(JobState::Failed)
    );
    assert_eq!(q.enqueue(&j, true).await.unwrap(), Enqueued::New);
}

#[tokio::test]
async fn reaper_requeues_an_expired_lease() {
    let redis = RedisServer::start().unwrap();
    let q = queue(&redis, "reap", Duration::from_millis(200), 3);
    let j = job(4);
    q.enqueue(&j, false).await.unwrap();
    let mut conn = q.blocking_conn(BLOCK).await.unwrap();
    let _lost = q.claim(&mut conn, "w-dies", BLOCK).await.unwrap().unwrap();

    // While the lease lives, the reaper leaves the job alone.
    assert_eq!(q.reap(Duration::from_secs(5)).await.unwrap().requeued, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // First lease-less sighting only marks it suspect; the second acts.
    assert_eq!(q.reap(Duration::from_secs(5)).await.unwrap().requeued, 0);
    assert_eq!(q.reap(Duration::from_secs(5)).await.unwrap().requeued, 1);
    assert_eq!(q.depths().await.unwrap(), (1, 0, 0));
    let back = q.job(&j.hash).await.unwrap().unwrap();
    assert_eq!(back.state, JobState::Queued);

    let again = q.claim(&mut conn, "w2", BLOCK).await.unwrap().unwrap();
    assert_eq!(again.job.attempts, 2);
}

#[tokio::test]
async fn reaper_dead_letters_after_max_attempts() {
    let redis = RedisServer::start().unwrap();
    let q = queue(&redis, "reapdead", Duration::from_millis(100), 1);
    let j = job(5);
    q.enqueue(&j, false).await.unwrap();
    let mut conn = q.blocking_conn(BLOCK).await.unwrap();
    q.claim(&mut conn, "w-dies", BLOCK).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    q.reap(Duration::from_secs(5)).await.unwrap();
    let reaped = q.reap(Duration::from_secs(5)).await.unwrap();
    assert_eq!(reaped.dead, 1);
    assert_eq!(
        q.job(&j.hash).await.unwrap().unwrap().state,
        JobState::Failed
    );
}

#[tokio::test]
async fn release_hands_back_without_counting() {
    let redis = RedisServer::start().unwrap();
    let q = queue(&redis, "release", Duration::from_secs(30), 3);
    let j = job(6);
    q.enqueue(&j, false).await.unwrap();
    let mut conn = q.blocking_conn(BLOCK).await.unwrap();
    let c = q.claim(&mut conn, "w1", BLOCK).await.unwrap().unwrap();
    q.release(&c).await.unwrap();
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
