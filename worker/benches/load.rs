//! Load run: many concurrent lab-shaped submissions of distinct songs against real processes
//! (redis-server, `stemsep-rest`, `stemsep-worker`s with the committed tiny model).
//!
//! The API runs as on the open internet: API keys required (the client sends one), and the
//! default rate limits and upload cap on. A client told to wait (429 or 503 with `Retry-After`)
//! waits and tries again, as a well-behaved one does; such waits are counted and reported, and
//! the latency of a submission includes them.
//!
//! Reports submission throughput, API latency (p50/p99/max of `POST /apiv1/separate`), errors,
//! separation throughput and lost jobs; exits non-zero if any submission failed or any job was
//! lost. Run with `cargo bench -p stemsep-worker --bench load` after `cargo build --workspace
//! --bins`. Knobs (environment): `STEMSEP_BENCH_SONGS` (50), `STEMSEP_BENCH_SECONDS` (song
//! length, 4), `STEMSEP_BENCH_WORKERS` (2).

#[path = "../tests/e2e_support/mod.rs"]
mod e2e_support;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use e2e_support::Env;
use serde_json::{json, Value};
use stemsep_common::job::{JobState, SongHash};
use stemsep_testkit::{free_port, tone_mp3};

fn knob(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The API key the bench's client presents.
const KEY: &str = "bench-load-0123456789abcdef";

/// Tries a submission allowed per song before it counts as an error.
const TRIES: usize = 20;

#[tokio::main]
async fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; any other argument is a filter this bench does not use.
    let songs_n = knob("STEMSEP_BENCH_SONGS", 50.0) as usize;
    let seconds = knob("STEMSEP_BENCH_SECONDS", 4.0) as f32;
    let workers = knob("STEMSEP_BENCH_WORKERS", 2.0) as usize;

    let rest_bin =
        PathBuf::from(env!("CARGO_BIN_EXE_stemsep-worker")).with_file_name("stemsep-rest");
    if !rest_bin.is_file() {
        eprintln!(
            "{} is missing: run `cargo build --workspace --bins` first",
            rest_bin.display()
        );
        return ExitCode::FAILURE;
    }
    let mut env = Env::new("bench-load", 10, 3).await;
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let mut vars = env.common_env();
    vars.push(("STEMSEP_BIND".into(), format!("127.0.0.1:{port}")));
    vars.push(("RUST_LOG".into(), "warn".into()));
    // On the open internet: keys required; rate limits and the upload cap at their defaults.
    vars.push(("STEMSEP_AUTH".into(), "keys".into()));
    vars.push(("STEMSEP_API_KEYS".into(), KEY.into()));
    env.spawn("rest", &rest_bin, vars, port);
    for i in 0..workers {
        env.spawn_worker(
            &format!("bench-w{i}"),
            &[("STEMSEP_PUBLIC_URL", api.as_str()), ("RUST_LOG", "warn")],
        );
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let ready = Instant::now() + Duration::from_secs(30);
    while !http
        .get(&api)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        if Instant::now() > ready {
            eprintln!("rest never answered\n{}", env.logs());
            return ExitCode::FAILURE;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let songs: Vec<Vec<u8>> = (0..songs_n)
        .map(|i| tone_mp3(150.0 + 13.0 * i as f32, seconds, 9000 + i as u64))
        .collect();
    let bodies: Vec<Value> = songs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "mp3": base64::engine::general_purpose::STANDARD.encode(s),
                "callback": { "url": "http://localhost:5000", "data": { "mp3": format!("bench{i}.mp3") } },
            })
        })
        .collect();

    println!(
        "load: {songs_n} songs of {seconds} s, {workers} workers, tiny model as htdemucs; API keys on, default rate limits (600/min, burst 60 per key) and upload cap (4)"
    );
    let throttled = AtomicUsize::new(0);
    let started = Instant::now();
    let posts = bodies.iter().map(|b| {
        let http = http.clone();
        let url = format!("{api}/apiv1/separate");
        let throttled = &throttled;
        async move {
            let t = Instant::now();
            let mut hash = None;
            for _ in 0..TRIES {
                match http
                    .post(&url)
                    .header("X-API-Key", KEY)
                    .json(b)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        hash = r
                            .json::<Value>()
                            .await
                            .ok()
                            .and_then(|v| v["hash"].as_str().map(str::to_owned));
                        break;
                    }
                    Ok(r) if r.status() == 429 || r.status() == 503 => {
                        throttled.fetch_add(1, Ordering::Relaxed);
                        let wait = r
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok()?.parse().ok())
                            .unwrap_or(1);
                        tokio::time::sleep(Duration::from_secs(wait)).await;
                    }
                    Ok(r) => {
                        eprintln!(
                            "submission: HTTP {} {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        );
                        break;
                    }
                    Err(e) => {
                        eprintln!("submission: {e}");
                        break;
                    }
                }
            }
            (t.elapsed(), hash)
        }
    });
    let results = futures::future::join_all(posts).await;
    let submit_wall = started.elapsed();
    let mut latencies: Vec<Duration> = results.iter().map(|(d, _)| *d).collect();
    latencies.sort();
    let hashes: Vec<SongHash> = results
        .iter()
        .filter_map(|(_, h)| h.as_ref()?.parse().ok())
        .collect();
    let errors = songs_n - hashes.len();

    let deadline = Instant::now() + Duration::from_secs(60 + 10 * songs_n as u64);
    let mut pending: Vec<SongHash> = hashes.clone();
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for h in pending {
            match env.job(&h).await {
                Some(j) if matches!(j.state, JobState::Done | JobState::Failed) => {}
                _ => still.push(h),
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_wall = started.elapsed();
    let mut lost = pending.len();
    let mut failed = 0;
    for h in &hashes {
        let state = env.job(h).await.map(|j| j.state);
        if state == Some(JobState::Failed) {
            failed += 1;
        } else if state == Some(JobState::Done) && !env.stems_present(h).await {
            // Marked done without its stems: as good as lost.
            lost += 1;
        }
    }

    println!("submissions:        {songs_n} concurrent, {errors} errors (target 0)");
    println!(
        "told to wait:       {} times (429/503 with Retry-After, then retried)",
        throttled.load(Ordering::Relaxed)
    );
    println!(
        "API latency:        p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (POST /apiv1/separate incl. MP3 check)",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.last().copied().unwrap_or_default())
    );
    println!(
        "submission rate:    {:.1} req/s ({:.2} s for all)",
        songs_n as f64 / submit_wall.as_secs_f64(),
        submit_wall.as_secs_f64()
    );
    println!(
        "separation:         {} done in {:.1} s: {:.2} songs/s, {:.2} s of audio per s",
        hashes.len() - lost - failed,
        all_wall.as_secs_f64(),
        (hashes.len() - lost - failed) as f64 / all_wall.as_secs_f64(),
        (hashes.len() - lost - failed) as f64 * seconds as f64 / all_wall.as_secs_f64()
    );
    println!("failed:             {failed}");
    println!("lost:               {lost} (target 0)");
    let (waiting, processing, dead) = env.depths().await;
    println!("queue after:        toWorker {waiting}, processing {processing}, deadLetter {dead}");
    if errors > 0 || lost > 0 || failed > 0 {
        eprintln!("{}", env.logs());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
