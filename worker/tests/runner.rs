//! The worker against a real Redis, real storage and the committed tiny model, as separate
//! `stemsep-worker` processes: normal runs with callbacks, kill -9 mid-job, Redis crashing
//! mid-run and staying down longer than a lease, a worker frozen past its lease, a resubmission
//! racing an old attempt, the retry policy (bad input fails at once, a transient failure waits out
//! a back-off), bad settings, retention, and graceful stops. Jobs go in through the queue API here
//! (the rest API is covered by `e2e.rs`).

mod e2e_support;

use std::time::Duration;

use e2e_support::{mp3_seconds, Env, Listener, LISTENER_IP, PATIENCE, SERIAL};
use stemsep_common::job::{Callback, JobState, Track, DEFAULT_MODEL};
use stemsep_common::storage::{ObjectKey, Storage};
use stemsep_testkit::tone_mp3;

/// Starts like an MP3 frame, then garbage: no decoder makes audio of it.
fn poison_song() -> Vec<u8> {
    let mut poison = vec![0xFF, 0xFB, 0x90, 0x64];
    poison.extend((0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    poison
}

/// Sum of one counter over the given worker processes.
async fn total(env: &mut Env, procs: &[usize], metric: &str) -> f64 {
    let mut sum = 0.0;
    for &i in procs {
        sum += env.proc(i).metric(metric).await;
    }
    sum
}

fn callback(url: &str, n: usize) -> Option<Callback> {
    Some(Callback {
        url: url.into(),
        data: serde_json::json!({ "song": n, "tag": "x" }),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_separate_every_song_and_call_back() {
    let _serial = SERIAL.lock().await;
    let mut env = Env::new("runner-basic", 3, 3).await;
    let hook = Listener::start().await;
    let songs: Vec<Vec<u8>> = (0..4)
        .map(|i| tone_mp3(220.0 + 110.0 * i as f32, 3.0 + i as f32 * 0.5, i as u64))
        .collect();
    let mut hashes = Vec::new();
    for (i, s) in songs.iter().enumerate() {
        hashes.push(env.submit(s, callback(&hook.url, i)).await);
    }
    // A callback the stock lab client would ask for: refused (loopback), the job still done.
    let refused = env
        .submit(
            &tone_mp3(990.0, 2.0, 99),
            callback("http://localhost:5000", 99),
        )
        .await;
    let allow = [("STEMSEP_CALLBACK_ALLOW", LISTENER_IP)];
    let a = env.spawn_worker("w-a", &allow);
    let b = env.spawn_worker("w-b", &allow);

    let jobs = env.wait_all_final(&hashes).await;
    let refused_job = env
        .wait_job(&refused, "refused callback", |j| {
            j.callback_status.is_some()
        })
        .await;
    assert_eq!(refused_job.state, JobState::Done);
    let status = refused_job.callback_status.unwrap();
    assert!(
        status.starts_with("refused:") && status.contains("loopback"),
        "{status}"
    );

    for ((job, hash), (i, song)) in jobs.iter().zip(&hashes).zip(songs.iter().enumerate()) {
        assert_eq!(job.state, JobState::Done, "{job:?}\n{}", env.logs());
        assert_eq!(job.progress, 100);
        assert_eq!(job.attempts, 1);
        let secs = mp3_seconds(song);
        for t in Track::lab() {
            let stem = env.storage.get(&ObjectKey::stem(hash, &t)).await.unwrap();
            let got = mp3_seconds(&stem);
            assert!(
                (got - secs).abs() < 0.1,
                "song {i} {t}: {got} s of {secs} s"
            );
        }
    }
    let calls = hook.wait_for(&hashes).await;
    for (i, h) in hashes.iter().enumerate() {
        let c = &calls[h.as_str()];
        assert_eq!(c.len(), 1, "one callback per job: {c:?}");
        let c = &c[0];
        assert_eq!(c["state"], "done");
        assert_eq!(c["data"], serde_json::json!({ "song": i, "tag": "x" }));
        assert_eq!(
            c["tracks"]["vocals"],
            format!("http://localhost:5000/apiv1/track/{h}/vocals.mp3")
        );
        assert_eq!(c["tracks"].as_object().unwrap().len(), 4);
    }
    for h in &hashes {
        let j = env
            .wait_job(h, "delivered", |j| j.callback_status.is_some())
            .await;
        assert_eq!(j.callback_status.as_deref(), Some("delivered"));
        // The input goes before the callback: a finished job keeps only its stems.
        assert!(!env.storage.exists(&ObjectKey::input(&j)).await.unwrap());
    }
    assert!(!calls.contains_key(refused.as_str()));
    assert_eq!(env.depths().await, (0, 0, 0));

    // Both processes report through /metrics, and together they did each job once.
    let mut done = 0.0;
    for i in [a, b] {
        done += env.proc(i).metric("stemsep_worker_jobs_done_total").await;
    }
    assert_eq!(done, 5.0);
    let p = env.proc(a);
    assert_eq!(p.metric("stemsep_worker_jobs_failed_total").await, 0.0);
    hook.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_job_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut env = Env::new("runner-kill", 2, 3).await;
    let mut hashes = Vec::new();
    for i in 0..4u64 {
        hashes.push(
            env.submit(&tone_mp3(300.0 + 50.0 * i as f32, 8.0, 100 + i), None)
                .await,
        );
    }
    let victim = env.spawn_worker("victim", &[]);
    // Kill only once the engine is demonstrably mid-song: progress recorded, not finished.
    let deadline = std::time::Instant::now() + e2e_support::PATIENCE;
    let running = loop {
        let mut hit = None;
        for h in &hashes {
            if let Some(j) = env.job(h).await {
                if j.state == JobState::Running && j.progress > 0 && j.progress < 100 {
                    hit = Some(h.clone());
                }
            }
        }
        if let Some(h) = hit {
            break h;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no job ever ran\n{}",
            env.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    env.proc(victim).kill9();
    let done_by_victim = env.proc(victim).log_count("job done");
    let rescuer = env.spawn_worker("rescuer", &[]);

    let jobs = env.wait_all_final(&hashes).await;
    for (j, h) in jobs.iter().zip(&hashes) {
        assert_eq!(j.state, JobState::Done, "{j:?}\n{}", env.logs());
        assert!(env.stems_present(h).await);
    }
    let interrupted = env.job(&running).await.unwrap();
    assert_eq!(
        interrupted.attempts, 2,
        "the killed job ran again: {interrupted:?}"
    );
    // Exactly once: the victim's completions plus the rescuer's are the jobs, no more.
    let done_by_rescuer = env
        .proc(rescuer)
        .metric("stemsep_worker_jobs_done_total")
        .await as usize;
    assert_eq!(
        done_by_victim + done_by_rescuer,
        hashes.len(),
        "{}",
        env.logs()
    );
    assert_eq!(env.depths().await, (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_crash_and_restart_mid_run_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut env = Env::new("runner-redis", 3, 3).await;
    let mut hashes = Vec::new();
    for i in 0..5u64 {
        hashes.push(
            env.submit(&tone_mp3(200.0 + 70.0 * i as f32, 4.0, 200 + i), None)
                .await,
        );
    }
    let a = env.spawn_worker("w-a", &[]);
    let b = env.spawn_worker("w-b", &[]);
    env.wait_job(&hashes[1], "running", |j| j.state == JobState::Running)
        .await;
    env.redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    env.redis.start_again().unwrap();

    let jobs = env.wait_all_final(&hashes).await;
    for (j, h) in jobs.iter().zip(&hashes) {
        assert_eq!(j.state, JobState::Done, "{j:?}\n{}", env.logs());
        assert!(env.stems_present(h).await);
    }
    assert_eq!(env.depths().await, (0, 0, 0));
    // Each claim loop noticed the outage and came back from it; no worker exited.
    for i in [a, b] {
        env.wait_log(i, "Redis reachable again").await;
        assert!(
            env.proc(i).child.try_wait().unwrap().is_none(),
            "{}",
            env.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_song_no_decoder_reads_fails_at_once_while_others_complete() {
    let _serial = SERIAL.lock().await;
    let mut env = Env::new("runner-poison", 3, 3).await;
    let hook = Listener::start().await;
    let bad = env.submit(&poison_song(), callback(&hook.url, 7)).await;
    let mut good = Vec::new();
    for i in 0..3u64 {
        good.push(
            env.submit(&tone_mp3(500.0 + 20.0 * i as f32, 3.0, 300 + i), None)
                .await,
        );
    }
    let allow = [("STEMSEP_CALLBACK_ALLOW", LISTENER_IP)];
    let a = env.spawn_worker("w-a", &allow);
    let _b = env.spawn_worker("w-b", &allow);

    let dead = env
        .wait_job(&bad, "failed", |j| j.state == JobState::Failed)
        .await;
    // Retrying the same bytes cannot help: one attempt, and the decoder's reason.
    assert_eq!(dead.attempts, 1, "{dead:?}");
    let reason = dead.error.clone().unwrap_or_default();
    assert!(
        reason.contains("corrupt") || reason.contains("not a supported audio file"),
        "reason: {reason}"
    );
    assert_eq!(
        env.queue.dead_letters().await.unwrap(),
        vec![bad.to_string()]
    );
    for j in env.wait_all_final(&good).await {
        assert_eq!(j.state, JobState::Done, "{j:?}");
    }
    let calls = hook.wait_for(std::slice::from_ref(&bad)).await;
    let c = &calls[bad.as_str()][0];
    assert_eq!(c["state"], "failed");
    assert_eq!(c["error"], reason.as_str());
    assert_eq!(c["data"]["song"], 7);
    assert_eq!(env.depths().await, (0, 0, 1));
    assert!(env.queue.delayed().await.unwrap().is_empty());
    assert_eq!(calls[bad.as_str()].len(), 1);
    let _ = env.proc(a).metric("stemsep_worker_jobs_dead_total").await;
    hook.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_back_or_finishes_then_exits_cleanly() {
    let _serial = SERIAL.lock().await;
    let mut env = Env::new("runner-term", 3, 3).await;
    let hash = env.submit(&tone_mp3(440.0, 12.0, 400), None).await;

    // No grace: the job is handed back untouched (the attempt does not count).
    let impatient = env.spawn_worker("impatient", &[("STEMSEP_GRACE_SECS", "0")]);
    env.wait_job(&hash, "mid-song", |j| {
        j.state == JobState::Running && j.progress > 0
    })
    .await;
    env.proc(impatient).terminate();
    let status = env.proc(impatient).wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}\n{}", env.logs());
    let j = env.job(&hash).await.unwrap();
    assert_eq!((j.state, j.attempts), (JobState::Queued, 0), "{j:?}");
    assert_eq!(env.depths().await, (1, 0, 0));

    // With grace: the job in hand is finished, then the worker exits.
    let patient = env.spawn_worker("patient", &[("STEMSEP_GRACE_SECS", "120")]);
    env.wait_job(&hash, "mid-song", |j| {
        j.state == JobState::Running && j.progress > 0
    })
    .await;
    env.proc(patient).terminate();
    let status = env.proc(patient).wait_exit(e2e_support::PATIENCE);
    assert!(status.success(), "{status:?}\n{}", env.logs());
    let j = env.job(&hash).await.unwrap();
    assert_eq!(j.state, JobState::Done, "{j:?}\n{}", env.logs());
    assert!(env.stems_present(&hash).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_waits_out_a_back_off_then_succeeds() {
    let _serial = SERIAL.lock().await;
    let mut env = Env::new("runner-transient", 3, 3).await;
    // A model that is not installed yet: not the song's fault, so worth another attempt.
    let song = tone_mp3(610.0, 2.0, 610);
    let hash = env.submit_as(&song, "late", None, false).await;
    let w = env.spawn_worker("w", &[("STEMSEP_RETRY_SECS", "5")]);
    let waiting = env
        .wait_job(&hash, "failed once", |j| {
            j.state == JobState::Queued && j.error.is_some()
        })
        .await;
    assert_eq!(waiting.attempts, 1);
    assert!(
        waiting.error.as_deref().unwrap().contains("not installed"),
        "{waiting:?}"
    );
    // Not pushed straight back: it sits in the delayed set, out of toWorker.
    assert_eq!(
        env.queue.delayed().await.unwrap(),
        vec![hash.to_string()],
        "{}",
        env.logs()
    );
    assert_eq!(env.depths().await, (0, 0, 0));
    assert_eq!(env.job(&hash).await.unwrap().attempts, 1);

    // The model arrives during the back-off; the retry succeeds.
    let models = env.model_dir();
    for ext in ["onnx", "onnx.json"] {
        std::fs::copy(
            models.join(format!("{DEFAULT_MODEL}.{ext}")),
            models.join(format!("late.{ext}")),
        )
        .unwrap();
    }
    let done = env
        .wait_job(&hash, "done", |j| j.state == JobState::Done)
        .await;
    assert_eq!(done.attempts, 2, "{done:?}");
    assert!(env.stems_present(&hash).await);
    assert_eq!(
        env.proc(w)
            .metric("stemsep_worker_jobs_retried_total")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_stop_the_worker_at_start_up() {
    let _serial = SERIAL.lock().await;
    let mut env = Env::new("runner-config", 3, 3).await;
    for (name, value, says) in [
        ("STEMSEP_LEASE_SECS", "0", "lease-secs"),
        (
            "STEMSEP_MODEL_DIR",
            "/nonexistent/models",
            "/nonexistent/models",
        ),
        ("STEMSEP_CLAIM_BLOCK_SECS", "99", "claim-block-secs"),
    ] {
        let i = env.spawn_worker(&format!("bad-{name}"), &[(name, value)]);
        let status = env.proc(i).wait_exit(PATIENCE);
        assert_eq!(status.code(), Some(2), "{name}={value}\n{}", env.logs());
        let log = env.proc(i).log_text();
        assert!(log.contains(says), "{name}={value}: {log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_frozen_past_its_lease_cannot_complete() {
    let _serial = SERIAL.lock().await;
    let mut env = Env::new("runner-frozen", 2, 3).await;
    let hook = Listener::start().await;
    let allow = [("STEMSEP_CALLBACK_ALLOW", LISTENER_IP)];
    let hash = env
        .submit(&tone_mp3(470.0, 12.0, 620), callback(&hook.url, 1))
        .await;
    let frozen = env.spawn_worker("w-frozen", &allow);
    env.wait_job(&hash, "mid-song", |j| {
        j.state == JobState::Running && j.progress > 0 && j.progress < 100
    })
    .await;
    env.proc(frozen).freeze();

    // Its lease lapses; a rescuer takes the job back after a whole lease time and runs it.
    let rescuer = env.spawn_worker("w-rescuer", &allow);
    let done = env
        .wait_job(&hash, "done by the rescuer", |j| j.state == JobState::Done)
        .await;
    assert_eq!(done.attempts, 2, "{done:?}");
    env.wait_job(&hash, "called back", |j| j.callback_status.is_some())
        .await;

    // The frozen worker wakes up mid-song: it learns at its next beat that the job is gone and
    // gives up; nothing it does reaches the record or the client.
    env.proc(frozen).thaw();
    env.wait_log(frozen, "no longer this worker's").await;
    // The heartbeat says so first; the attempt is counted lost once its separation has stopped.
    let deadline = std::time::Instant::now() + PATIENCE;
    while env
        .proc(frozen)
        .metric("stemsep_worker_jobs_lost_total")
        .await
        < 1.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the frozen attempt is never counted lost\n{}",
            env.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let procs = [frozen, rescuer];
    assert_eq!(
        total(&mut env, &procs, "stemsep_worker_jobs_done_total").await,
        1.0
    );
    assert_eq!(
        env.proc(frozen)
            .metric("stemsep_worker_jobs_lost_total")
            .await,
        1.0,
        "counted once"
    );
    let after = env.job(&hash).await.unwrap();
    assert_eq!((after.state, after.attempts), (JobState::Done, 2));
    let calls = hook.by_hash();
    assert_eq!(calls[hash.as_str()].len(), 1, "{calls:?}");
    assert_eq!(calls[hash.as_str()][0]["state"], "done");
    assert!(env.stems_present(&hash).await);
    assert_eq!(env.depths().await, (0, 0, 0));
    hook.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_attempt_cannot_erase_a_resubmission() {
    let _serial = SERIAL.lock().await;
    // One attempt: the job of a lost worker fails for good, and its client resubmits.
    let mut env = Env::new("runner-resubmit", 2, 1).await;
    let hook = Listener::start().await;
    let allow = [("STEMSEP_CALLBACK_ALLOW", LISTENER_IP)];
    let song = tone_mp3(530.0, 12.0, 630);
    let hash = env.submit(&song, callback(&hook.url, 1)).await;
    let old = env.spawn_worker("w-old", &allow);
    env.wait_job(&hash, "mid-song", |j| {
        j.state == JobState::Running && j.progress > 0 && j.progress < 100
    })
    .await;
    env.proc(old).freeze();
    let reaper = env.spawn_worker("w-reaper", &allow);
    let failed = env
        .wait_job(&hash, "failed", |j| j.state == JobState::Failed)
        .await;
    assert!(
        failed.error.as_deref().unwrap().contains("lease"),
        "{failed:?}"
    );
    hook.wait_for(std::slice::from_ref(&hash)).await;

    // The resubmission, then the old attempt wakes up while it is queued or running.
    let again = env
        .submit_as(&song, DEFAULT_MODEL, callback(&hook.url, 2), true)
        .await;
    assert_eq!(again, hash);
    env.proc(old).thaw();
    let done = env
        .wait_job(&hash, "done", |j| {
            j.state == JobState::Done && j.callback_status.is_some()
        })
        .await;
    assert_eq!(done.attempts, 1, "the resubmission ran once: {done:?}");
    assert_eq!(done.callback.unwrap().data["song"], 2);
    env.wait_log(old, "no longer this worker's").await;

    let procs = [old, reaper];
    assert_eq!(
        total(&mut env, &procs, "stemsep_worker_jobs_done_total").await,
        1.0,
        "{}",
        env.logs()
    );
    let calls = &hook.by_hash()[hash.as_str()];
    let seen: Vec<(String, i64)> = calls
        .iter()
        .map(|c| {
            (
                c["state"].as_str().unwrap().to_owned(),
                c["data"]["song"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![("failed".to_owned(), 1), ("done".to_owned(), 2)],
        "one callback per submission"
    );
    assert!(env.stems_present(&hash).await);
    assert_eq!(env.depths().await, (0, 0, 0));
    hook.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_longer_than_the_lease_runs_each_job_once() {
    let _serial = SERIAL.lock().await;
    let lease = 2;
    let mut env = Env::new("runner-outage", lease, 3).await;
    let hook = Listener::start().await;
    let allow = [("STEMSEP_CALLBACK_ALLOW", LISTENER_IP)];
    let mut hashes = Vec::new();
    for i in 0..4u64 {
        let song = tone_mp3(240.0 + 40.0 * i as f32, 8.0, 640 + i);
        hashes.push(env.submit(&song, callback(&hook.url, i as usize)).await);
    }
    let a = env.spawn_worker("w-a", &allow);
    let b = env.spawn_worker("w-b", &allow);
    // Both workers mid-song, so Redis goes away under running jobs, not under a claim.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let mut running = 0;
        for h in &hashes {
            if let Some(j) = env.job(h).await {
                if j.state == JobState::Running && j.progress > 0 && j.progress < 100 {
                    running += 1;
                }
            }
        }
        if running == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", env.logs());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    env.redis.kill();
    // Three leases: every lease has lapsed by the time Redis is back.
    tokio::time::sleep(Duration::from_secs(3 * lease)).await;
    env.redis.start_again().unwrap();

    let jobs = env.wait_all_final(&hashes).await;
    for (j, h) in jobs.iter().zip(&hashes) {
        assert_eq!(j.state, JobState::Done, "{j:?}\n{}", env.logs());
        assert!(env.stems_present(h).await);
    }
    for h in &hashes {
        let j = env
            .wait_job(h, "called back", |j| j.callback_status.is_some())
            .await;
        // Nobody took a job its owner still held: each ran once.
        assert_eq!(j.attempts, 1, "{j:?}\n{}", env.logs());
    }
    assert_eq!(
        total(&mut env, &[a, b], "stemsep_worker_jobs_done_total").await,
        4.0
    );
    let calls = hook.by_hash();
    for h in &hashes {
        assert_eq!(calls[h.as_str()].len(), 1, "{calls:?}");
    }
    assert_eq!(env.depths().await, (0, 0, 0));
    hook.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_are_deleted_after_the_retention() {
    let _serial = SERIAL.lock().await;
    let mut env = Env::new("runner-retention", 3, 3).await;
    let good = env.submit(&tone_mp3(650.0, 2.0, 650), None).await;
    let bad = env.submit(&poison_song(), None).await;
    let records = [env.job(&good).await.unwrap(), env.job(&bad).await.unwrap()];
    env.spawn_worker("w", &[("STEMSEP_RETENTION_SECS", "2")]);
    env.wait_all_final(&[good.clone(), bad.clone()]).await;
    // Inputs go as soon as their jobs end.
    for job in &records {
        let (storage, input) = (env.storage.clone(), ObjectKey::input(job));
        env.eventually("input deleted", || {
            let (storage, input) = (storage.clone(), input.clone());
            async move { !storage.exists(&input).await.unwrap() }
        })
        .await;
    }
    assert!(env.stems_present(&good).await);
    assert_eq!(
        env.queue.dead_letters().await.unwrap(),
        vec![bad.to_string()]
    );

    // Then, the retention over, everything else.
    for h in [&good, &bad] {
        let (queue, h) = (env.queue.clone(), h.clone());
        env.eventually("record deleted", || {
            let (queue, h) = (queue.clone(), h.clone());
            async move { queue.job(&h).await.unwrap().is_none() }
        })
        .await;
    }
    for t in Track::lab() {
        assert!(!env
            .storage
            .exists(&ObjectKey::stem(&good, &t))
            .await
            .unwrap());
    }
    assert!(env.queue.dead_letters().await.unwrap().is_empty());
    assert!(std::fs::read_dir(env.storage_dir().join("queue"))
        .map(|d| d.count() == 0)
        .unwrap_or(true));
}
