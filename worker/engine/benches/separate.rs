//! `make bench`: the full-size HT-Demucs core on this machine.
//!
//! For a full-size export (default `~/.cache/stemsep/models/htdemucs-random.onnx`, override with
//! `STEMSEP_BENCH_MODEL`), prints in one run:
//! - one segment through the core alone (tract), per-core GFLOP/s (335 GFLOP per segment);
//! - the same segment on onnxruntime and PyTorch demucs via `model/bench_ref.py` when python with
//!   those packages is available (`STEMSEP_BENCH_PYTHON`, default
//!   `python3`), as ratios;
//! - whole songs (synthetic music, MP3 in → one MP3 per stem out through an `EncodeSink`) of
//!   1, 4 and 10 minutes (`STEMSEP_BENCH_MINUTES=1,4,10`): wall time, real-time factor, time per
//!   segment, and peak RSS — each song runs in its own child process so each peak is its own;
//! - the first song also separated by onnxruntime (the core, with `model/reference.py`'s numpy host
//!   side) and PyTorch demucs (`Separator`), from the same PCM: their song RTFs; and by us the way
//!   they run it, PCM in and stems in memory out, with our throughput ratio to each (>1: ours
//!   faster; the time of onnxruntime's core alone is the harder bar). onnxruntime runs the song
//!   twice: one segment at a time on all threads, and segments side by side on one thread each as
//!   ours does; the ratio takes its faster run. The MP3 songs add what the others do not do:
//!   decoding the MP3 and encoding four. After it, what the service adds beside the separation:
//!   every stem streamed into its lossless master, and one file made from the masters (the last
//!   stem's complement, decoded, mixed and encoded as FLAC and as MP3);
//! - with `STEMSEP_BENCH_MODELS=name=path,…`, the first song through each of those models (e.g. the
//!   Demucs family's exports): time, RTF and peak RSS, each as a ratio to the first model's.
//!
//! Cores: `STEMSEP_BENCH_THREADS` (tract threads per segment, default all cores) and
//! `STEMSEP_BENCH_IN_FLIGHT` (segments in parallel, default the engine's: 2 on 2 cores).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use stemsep_audio::{decode, encode_mp3, ClipMode, Depth, Format};
use stemsep_engine::{EncodeSink, EngineConfig, PlanarAudio, Separator};

mod support;
use support::{config, env_or, model_path, segment_audio, synthetic_song};

/// Multiply-adds ×2 in one 7.8 s segment of full-size htdemucs (issue 3).
const GFLOP_PER_SEGMENT: f64 = 335.0;

/// `VmHWM` (peak resident set) and `VmRSS` of this process, in MiB.
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Child: one segment through the core alone, best of `runs` after a warm-up.
fn child_segment(model: &Path, cfg: EngineConfig) {
    let t0 = Instant::now();
    let one_segment = EngineConfig {
        segments_in_flight: 1,
        ..cfg
    };
    let separator = Separator::load_with(model, one_segment).expect("model loads");
    let load_s = t0.elapsed().as_secs_f64();
    let info = separator.info().clone();
    let audio = segment_audio(&info);
    let mut best = separator.time_segment(&audio).expect("segment runs");
    for _ in 0..2 {
        let t = separator.time_segment(&audio).expect("segment runs");
        if t.cores < best.cores {
            best = t;
        }
    }
    println!(
        "{{\"load_s\":{load_s:.3},\"segment_s\":{:.4},\"stft_s\":{:.5},\"peak_mib\":{:.0},\"sample_rate\":{}}}",
        best.cores.as_secs_f64(),
        best.stft.as_secs_f64(),
        memory_mib().0,
        info.sample_rate
    );
}

/// The model loaded, the peak RSS (MiB) loading it took, and a synthetic song of `minutes` at the
/// model's rate.
fn separator_and_song(
    model: &Path,
    cfg: EngineConfig,
    minutes: f64,
) -> (Separator, f64, (Vec<f32>, Vec<f32>)) {
    let separator = Separator::load_with(model, cfg).expect("model loads");
    let loaded_peak = memory_mib().0;
    let song = synthetic_song(minutes * 60.0, separator.info().sample_rate);
    (separator, loaded_peak, song)
}

/// Child: the first song as the other engines take it, PCM in and stems in memory out (no MP3
/// decode or encode), so the throughput ratios compare the same work.
fn child_song_pcm(model: &Path, cfg: EngineConfig, minutes: f64) {
    let (separator, _, (l, r)) = separator_and_song(model, cfg, minutes);
    let audio = PlanarAudio {
        sample_rate: separator.info().sample_rate,
        channels: vec![l, r],
    };
    let t = Instant::now();
    let stems = separator
        .separate_planar(audio, &|_| {})
        .expect("song separates");
    let song_s = t.elapsed().as_secs_f64();
    let peak = memory_mib().0;
    // What the service adds: the worker streams every stem into its lossless master; a file
    // asked for later (the last stem's complement, no_vocals for htdemucs) is made from the
    // masters it needs: decoded, mixed, encoded.
    let rate = separator.info().sample_rate;
    let t = Instant::now();
    let masters: Vec<Vec<u8>> = stems
        .iter()
        .map(|stem| {
            let mut w = stemsep_audio::master_writer(rate).expect("master encoder");
            w.push(&stem[0], &stem[1]).expect("master encodes");
            w.finish().expect("master finishes")
        })
        .collect();
    let masters_s = t.elapsed().as_secs_f64();
    let derive = |format: Format| {
        let t = Instant::now();
        let mut mix = [Vec::new(), Vec::new()];
        for master in &masters[..masters.len() - 1] {
            stemsep_audio::add_master(master, &mut mix).expect("master decodes");
        }
        format
            .encode(&mix, rate, ClipMode::Rescale)
            .expect("mix encodes");
        t.elapsed().as_secs_f64()
    };
    let flac_s = derive(Format::Flac(Depth::Int24));
    let mp3_s = derive(Format::MP3_320);
    println!(
        "{{\"song_s\":{song_s:.2},\"peak_mib\":{peak:.0},\"masters_s\":{masters_s:.2},\"mix_flac_s\":{flac_s:.2},\"mix_mp3_s\":{mp3_s:.2}}}"
    );
}

/// Child: a whole synthetic song of `minutes` through separate_mp3.
fn child_song(model: &Path, cfg: EngineConfig, minutes: f64) {
    let (separator, loaded_peak, (l, r)) = separator_and_song(model, cfg, minutes);
    let info = separator.info().clone();
    let mp3 = encode_mp3(&l, &r, info.sample_rate, 192).unwrap();
    drop((l, r));
    let samples = (minutes * 60.0 * info.sample_rate as f64) as usize;
    let segments = separator.segments(samples);
    let t = Instant::now();
    let audio = decode(&mp3, Duration::from_secs(3600)).expect("song decodes");
    let mut sink =
        EncodeSink::per_source(info.sources.len(), info.sample_rate, 320).expect("encoders start");
    separator
        .separate(audio, &mut sink, &|_| {})
        .expect("song separates");
    let stems = sink.finish().expect("encoders finish");
    let song_s = t.elapsed().as_secs_f64();
    let out_mib = stems.iter().map(Vec::len).sum::<usize>() as f64 / 1048576.0;
    let stems = stems.len();
    println!(
        "{{\"minutes\":{minutes},\"segments\":{segments},\"song_s\":{song_s:.2},\"rtf\":{:.4},\"per_segment_s\":{:.3},\"peak_mib\":{:.0},\"model_loaded_peak_mib\":{loaded_peak:.0},\"stems_mib\":{out_mib:.1},\"stems\":{stems}}}",
        song_s / (minutes * 60.0),
        song_s / segments as f64,
        memory_mib().0
    );
}

fn run_child(args: &[String]) -> Option<serde_json::Value> {
    let exe = std::env::current_exe().ok()?;
    let mut args = args.to_vec();
    if !args.iter().any(|a| a == "--model") {
        args.extend(["--model".into(), model_path().display().to_string()]);
    }
    let out = Command::new(exe).args(&args).output().ok()?;
    if !out.status.success() {
        eprintln!(
            "child {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
}

/// `$STEMSEP_BENCH_PYTHON` (else `python3`) when it can import onnxruntime.
fn python() -> Option<String> {
    let python = env_or("STEMSEP_BENCH_PYTHON", "python3");
    Command::new(&python)
        .arg("-c")
        .arg("import onnxruntime")
        .output()
        .is_ok_and(|o| o.status.success())
        .then_some(python)
}

fn main() {
    // SAFETY: the first statement of main, before this process starts any thread.
    unsafe { stemsep_engine::keep_freed_memory() };
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Children bench the model their parent names; the parent, $STEMSEP_BENCH_MODEL's.
    let model = match args.iter().position(|a| a == "--model") {
        Some(i) => args.get(i + 1).map(Into::into).expect("--model PATH"),
        None => model_path(),
    };
    let cfg = config();
    if let Some(i) = args.iter().position(|a| a == "--child-segment") {
        let _ = i;
        return child_segment(&model, cfg);
    }
    if let Some(i) = args.iter().position(|a| a.starts_with("--child-song")) {
        let minutes = args
            .get(i + 1)
            .and_then(|m| m.parse().ok())
            .expect("--child-song[-pcm] MINUTES");
        return match args[i].as_str() {
            "--child-song-pcm" => child_song_pcm(&model, cfg, minutes),
            _ => child_song(&model, cfg, minutes),
        };
    }
    if !model.exists() {
        eprintln!(
            "no model at {} (make it with `python model/export.py --random-init --seed 42 -o {}` or set STEMSEP_BENCH_MODEL); skipping",
            model.display(),
            model.display()
        );
        return;
    }
    println!(
        "stemsep separate bench: {} | tract threads/segment {} | segments in flight {} | {} cores",
        model.display(),
        cfg.threads_per_segment,
        cfg.segments_in_flight,
        EngineConfig::default().threads_per_segment
    );

    let seg = run_child(&["--child-segment".into()]);
    let tract_s = seg.as_ref().and_then(|v| v["segment_s"].as_f64());
    if let (Some(v), Some(s)) = (&seg, tract_s) {
        println!(
            "one segment (cores with their iSTFT): tract {s:.2} s = {:.1} GFLOP/s per core ({} threads); host STFT {:.3} s; load {:.1} s; peak RSS {} MiB",
            GFLOP_PER_SEGMENT / s / cfg.threads_per_segment as f64,
            cfg.threads_per_segment,
            v["stft_s"].as_f64().unwrap_or(f64::NAN),
            v["load_s"].as_f64().unwrap_or(f64::NAN),
            v["peak_mib"]
        );
    }

    let minutes: Vec<f64> = env_or("STEMSEP_BENCH_MINUTES", "1,4,10")
        .split(',')
        .filter_map(|m| m.trim().parse::<f64>().ok())
        .collect();
    // The other engines separate the first song too, from the PCM it is encoded from.
    let song_pcm = std::env::temp_dir().join(format!("stemsep-bench-{}.f32", std::process::id()));
    let reference_minutes = match (minutes.first(), seg.as_ref()) {
        (Some(&m), Some(v)) => {
            let sr = v["sample_rate"].as_u64().unwrap_or(44_100) as u32;
            let (l, r) = synthetic_song(m * 60.0, sr);
            let bytes: Vec<u8> = l.iter().chain(&r).flat_map(|x| x.to_le_bytes()).collect();
            std::fs::write(&song_pcm, bytes).ok().map(|_| m)
        }
        _ => None,
    };
    let reference = python().and_then(|py| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../model/bench_ref.py");
        let mut command = Command::new(py);
        command
            .arg(script)
            .arg(&model)
            .arg("--threads")
            .arg(cfg.threads_per_segment.to_string());
        if reference_minutes.is_some() {
            command.arg("--song").arg(&song_pcm);
        }
        let out = command.output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .rev()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    });
    match (&reference, tract_s) {
        (Some(r), Some(t)) => {
            for (name, key) in [
                ("onnxruntime", "onnxruntime_s"),
                ("PyTorch demucs", "pytorch_s"),
            ] {
                match r[key].as_f64() {
                    Some(s) => println!(
                        "one segment: {name} {s:.2} s = {:.1} GFLOP/s per core; {name}/tract time ratio {:.2} (>1: tract faster)",
                        GFLOP_PER_SEGMENT / s / cfg.threads_per_segment as f64,
                        s / t
                    ),
                    None => println!("{name}: unavailable ({})", r[key.replace("_s", "_error")]),
                }
            }
        }
        _ => println!(
            "onnxruntime/PyTorch reference: unavailable (python with onnxruntime not found)"
        ),
    }

    let _ = std::fs::remove_file(&song_pcm);
    let reference_song = |key: &str| reference.as_ref().and_then(|r| r[key].as_f64());
    if let Some(m) = reference_minutes {
        for (name, key) in [
            ("onnxruntime", "onnxruntime_song_s"),
            (
                "onnxruntime, segments side by side",
                "onnxruntime_song_side_by_side_s",
            ),
            ("PyTorch demucs", "pytorch_song_s"),
        ] {
            match reference_song(key) {
                Some(s) => print!(
                    "{m:>4} min song: {name} {s:.1} s, RTF {:.3}",
                    s / (m * 60.0)
                ),
                None => print!("{m:>4} min song: {name} unavailable"),
            }
            match reference_song("onnxruntime_song_core_s") {
                Some(core) if key == "onnxruntime_song_s" => {
                    println!(" (core {core:.1} s, numpy host side the rest)")
                }
                _ => println!(),
            }
        }
    }

    for minutes in minutes {
        match run_child(&["--child-song".into(), minutes.to_string()]) {
            Some(v) => {
                let rtf = v["rtf"].as_f64().unwrap_or(f64::NAN);
                let per = v["per_segment_s"].as_f64().unwrap_or(f64::NAN);
                println!(
                    "{minutes:>4} min song, MP3 in and one MP3 per stem out: {:.1} s, RTF {rtf:.3}, {} segments, {per:.2} s/segment, peak RSS {} MiB (model loaded {} MiB)",
                    v["song_s"].as_f64().unwrap_or(f64::NAN),
                    v["segments"],
                    v["peak_mib"],
                    v["model_loaded_peak_mib"]
                );
                if reference_minutes == Some(minutes) {
                    song_pcm_against_references(minutes, &reference_song);
                }
            }
            None => println!("{minutes} min song: failed"),
        }
    }
    if let Some(&minutes) = env_or("STEMSEP_BENCH_MINUTES", "1,4,10")
        .split(',')
        .filter_map(|m| m.trim().parse::<f64>().ok())
        .collect::<Vec<_>>()
        .first()
    {
        models_side_by_side(minutes);
    }
}

/// `$STEMSEP_BENCH_MODELS` (`name=path,…`): the same song, MP3 in and one MP3 per stem out,
/// through each model, with its time and peak RSS as a ratio to the first model's.
fn models_side_by_side(minutes: f64) {
    let list = env_or("STEMSEP_BENCH_MODELS", "");
    let models: Vec<(&str, &str)> = list
        .split(',')
        .filter_map(|entry| entry.trim().split_once('='))
        .collect();
    if models.is_empty() {
        return;
    }
    println!("\n{minutes} min song through each model (MP3 in, one MP3 per stem out):");
    println!(
        "{:<16} {:>8} {:>8} {:>7} {:>10} {:>9} {:>9}",
        "model", "song s", "RTF", "stems", "peak MiB", "time ×", "memory ×"
    );
    let mut first: Option<(f64, f64)> = None;
    for (name, path) in models {
        let args = [
            "--child-song".to_string(),
            minutes.to_string(),
            "--model".into(),
            path.into(),
        ];
        let Some(v) = run_child(&args) else {
            println!("{name:<16} failed");
            continue;
        };
        let song_s = v["song_s"].as_f64().unwrap_or(f64::NAN);
        let peak = v["peak_mib"].as_f64().unwrap_or(f64::NAN);
        let (t0, m0) = *first.get_or_insert((song_s, peak));
        println!(
            "{name:<16} {song_s:>8.1} {:>8.3} {:>7} {peak:>10.0} {:>9.2} {:>9.2}",
            v["rtf"].as_f64().unwrap_or(f64::NAN),
            v["stems"],
            song_s / t0,
            peak / m0
        );
    }
}

/// The first song again, PCM in and out as the other engines ran it, and the throughput ratios
/// against them; onnxruntime is held to the faster of its two schedules.
fn song_pcm_against_references(minutes: f64, reference_song: &dyn Fn(&str) -> Option<f64>) {
    let Some(pcm) = run_child(&["--child-song-pcm".into(), minutes.to_string()]) else {
        println!("{minutes:>4} min song, PCM in and out: failed");
        return;
    };
    let song_s = pcm["song_s"].as_f64().unwrap_or(f64::NAN);
    print!(
        "{minutes:>4} min song, PCM in and out as the others run it: {song_s:.1} s, RTF {:.3}, peak RSS {} MiB",
        song_s / (minutes * 60.0),
        pcm["peak_mib"]
    );
    let onnxruntime_best = ["onnxruntime_song_s", "onnxruntime_song_side_by_side_s"]
        .into_iter()
        .filter_map(reference_song)
        .reduce(f64::min);
    for (name, s) in [
        ("onnxruntime (its faster schedule)", onnxruntime_best),
        (
            "onnxruntime core alone",
            reference_song("onnxruntime_song_core_s"),
        ),
        ("PyTorch demucs", reference_song("pytorch_song_s")),
    ] {
        if let Some(s) = s {
            print!("; throughput vs {name} {:.2}", s / song_s);
        }
    }
    println!();
    let (flac_s, mp3_s) = (
        pcm["mix_flac_s"].as_f64().unwrap_or(f64::NAN),
        pcm["mix_mp3_s"].as_f64().unwrap_or(f64::NAN),
    );
    let masters_s = pcm["masters_s"].as_f64().unwrap_or(f64::NAN);
    println!(
        "{minutes:>4} min song: its lossless masters (every stem to 24-bit FLAC, in the worker) {masters_s:.2} s ({:.1}% of the separation); one no_<stem> file made from them (decode, mix, encode; one core): FLAC 24 bit {flac_s:.2} s ({:.1}%), MP3 320 kbit/s {mp3_s:.2} s ({:.1}%)",
        100.0 * masters_s / song_s,
        100.0 * flac_s / song_s,
        100.0 * mp3_s / song_s
    );
}
