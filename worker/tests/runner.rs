//! The worker against a real Redis, real storage and the committed tiny model, as separate
//! `stemsep-worker` processes: normal runs with callbacks, kill -9 mid-job, Redis crashing
//! mid-run, a poison job, and graceful stops. Jobs go in through the queue API here (the rest API
//! is covered by `e2e.rs`).

mod e2e_support;

use std::time::Duration;

use e2e_support::{mp3_seconds, Env, Listener, LISTENER_IP, SERIAL};
use stemsep_common::job::{Callback, JobState, Track};
use stemsep_common::storage::{ObjectKey, Storage};
use stemsep_testkit::tone_mp3;

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
async fn poison_job_is_dead_lettered_while_others_complete() {
    let _serial = SERIAL.lock().await;
    let mut env = Env::new("runner-poison", 3, 3).await;
    let hook = Listener::start().await;
    // Starts like an MP3 frame, then garbage: no decoder makes audio of it.
    let mut poison = vec![0xFF, 0xFB, 0x90, 0x64];
    poison.extend((0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    let bad = env.submit(&poison, callback(&hook.url, 7)).await;
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
    assert_eq!(dead.attempts, 3);
    let reason = dead.error.clone().unwrap_or_default();
    assert!(
        !reason.is_empty() && !reason.contains("lease"),
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
