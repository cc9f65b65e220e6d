//! Where one segment's time goes inside tract: every node of the optimised plan timed, summed by
//! operator kind (`make bench-profile`). The model is `$STEMSEP_BENCH_MODEL` (default: the
//! full-size random-init htdemucs export `make bench` makes); threads `$STEMSEP_BENCH_THREADS`.

use std::time::Instant;

use stemsep_worker::engine::model::Model;

mod support;
use support::{config, model_path, segment_inputs};

fn main() {
    let path = model_path();
    let threads = config().threads_per_segment;
    let model = Model::load(&path, threads)
        .unwrap_or_else(|e| panic!("{}: {e} (make bench-engine exports it)", path.display()));
    let (_, mix, spec) = segment_inputs(model.info());
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
