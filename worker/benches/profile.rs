//! Where one segment's time goes inside tract: every node of the optimised plan timed, summed by
//! operator kind (`make bench-profile`). The model is `$STEMSEP_BENCH_MODEL` (default: the
//! full-size random-init htdemucs export `make bench` makes); threads `$STEMSEP_BENCH_THREADS`.

use std::time::Instant;

use stemsep_worker::engine::model::Model;

mod support;
use support::model_path;

fn main() {
    let path = model_path();
    let threads = std::env::var("STEMSEP_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let model = Model::load(&path, threads)
        .unwrap_or_else(|e| panic!("{}: {e} (make bench-engine exports it)", path.display()));
    let info = model.info().clone();
    let (c, t) = (info.channels, info.segment_samples);
    let (bins, frames) = (info.n_fft / 2, t.div_ceil(info.hop_length));
    // Deterministic noise: timing does not depend on the values, only on the shapes.
    let noise = |n: usize, seed: u32| -> Vec<f32> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as f32 / u32::MAX as f32 - 0.5
            })
            .collect()
    };
    let (mix, spec) = (noise(c * t, 1), noise(2 * c * bins * frames, 2));
    let started = Instant::now();
    model.run(mix.clone(), spec.clone()).expect("warm-up run");
    let plain = started.elapsed();
    let started = Instant::now();
    let table = model.profile(mix, spec).expect("profiled run");
    let profiled = started.elapsed();
    let total: f64 = table.iter().map(|(_, d, _)| d.as_secs_f64()).sum();
    println!(
        "{} ({} threads): segment {:.2} s plain, {:.2} s profiled, {:.2} s inside nodes",
        path.display(),
        threads,
        plain.as_secs_f64(),
        profiled.as_secs_f64(),
        total
    );
    println!("{:<28} {:>9} {:>6} {:>6}", "operator", "ms", "%", "nodes");
    for (op, d, n) in &table {
        let s = d.as_secs_f64();
        if s / total < 0.002 {
            continue;
        }
        println!(
            "{op:<28} {:>9.1} {:>6.1} {n:>6}",
            s * 1e3,
            100.0 * s / total
        );
    }
}
