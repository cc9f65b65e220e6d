//! Where one segment's time goes inside tract: every node of the optimised plan timed, summed by
//! operator kind (`make bench-profile`), then the slowest nodes with what tract says about them
//! (shapes, kernel). The model is `$STEMSEP_BENCH_MODEL` (default: the full-size random-init
//! htdemucs export `make bench` makes); threads `$STEMSEP_BENCH_THREADS`; slowest nodes listed
//! `$STEMSEP_PROFILE_NODES` (default 25). Each node's time is its best of `$STEMSEP_PROFILE_RUNS`
//! runs (default 3): on a shared VM single runs swing by 10-20 %.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use stemsep_engine::{EngineConfig, Separator};

mod support;
use support::{config, env_or, model_path, segment_audio};

fn main() {
    // SAFETY: the first statement of main, before this process starts any thread.
    unsafe { stemsep_engine::keep_freed_memory() };
    let path = model_path();
    let threads = config().threads_per_segment;
    let one_segment = EngineConfig {
        threads_per_segment: threads,
        segments_in_flight: 1,
    };
    let separator = Separator::load_with(&path, one_segment)
        .unwrap_or_else(|e| panic!("{}: {e} (make bench-engine exports it)", path.display()));
    let audio = segment_audio(separator.info());
    let runs: usize = env_or("STEMSEP_PROFILE_RUNS", "3")
        .parse()
        .unwrap_or(3)
        .max(1);
    separator.time_segment(&audio).expect("warm-up run");
    let mut plain = Duration::MAX;
    let mut profiled = Duration::MAX;
    let mut nodes = Vec::new();
    for _ in 0..runs {
        let times = separator.time_segment(&audio).expect("plain run");
        plain = plain.min(times.cores);
        let started = Instant::now();
        let run = separator.profile_segment(&audio).expect("profiled run");
        profiled = profiled.min(started.elapsed());
        if nodes.is_empty() {
            nodes = run;
        } else {
            // The plan runs its nodes in the same order every time.
            for (best, this) in nodes.iter_mut().zip(run) {
                best.time = best.time.min(this.time);
            }
        }
    }
    let total: f64 = nodes.iter().map(|n| n.time.as_secs_f64()).sum();
    println!(
        "{} ({} threads, best of {runs}): segment {:.2} s plain, {:.2} s profiled, {:.2} s inside nodes",
        path.display(),
        threads,
        plain.as_secs_f64(),
        profiled.as_secs_f64(),
        total
    );

    let mut by_op: HashMap<&str, (Duration, usize)> = HashMap::new();
    for n in &nodes {
        let entry = by_op.entry(&n.op).or_default();
        entry.0 += n.time;
        entry.1 += 1;
    }
    let mut by_op: Vec<_> = by_op.into_iter().collect();
    by_op.sort_by_key(|(_, (d, _))| std::cmp::Reverse(*d));
    println!("{:<28} {:>9} {:>6} {:>6}", "operator", "ms", "%", "nodes");
    for (op, (d, n)) in &by_op {
        let s = d.as_secs_f64();
        if s / total >= 0.002 {
            println!(
                "{op:<28} {:>9.1} {:>6.1} {n:>6}",
                s * 1e3,
                100.0 * s / total
            );
        }
    }

    let top: usize = env_or("STEMSEP_PROFILE_NODES", "25").parse().unwrap_or(25);
    nodes.sort_by_key(|n| std::cmp::Reverse(n.time));
    println!("\nslowest {top} nodes:");
    for n in nodes.iter().take(top) {
        println!(
            "{:>8.1} ms  {:<20} {}  | {}",
            n.time.as_secs_f64() * 1e3,
            n.op,
            n.node,
            n.info
        );
    }
}
