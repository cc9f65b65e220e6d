//! What the engine benches share: where the model is, how many cores to use, and a deterministic
//! music-like input.

use std::path::PathBuf;

use stemsep_engine::{EngineConfig, ModelInfo, PlanarAudio};

/// `$STEMSEP_BENCH_MODEL`, else the full-size random-init htdemucs export `make bench-engine`
/// makes under `~/.cache/stemsep/models/`.
pub fn model_path() -> PathBuf {
    std::env::var_os("STEMSEP_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/stemsep/models/htdemucs-random.onnx")
        })
}

/// `$key`, else `default`.
pub fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

/// Cores: `$STEMSEP_BENCH_THREADS` and `$STEMSEP_BENCH_IN_FLIGHT`, else the engine defaults.
pub fn config() -> EngineConfig {
    let d = EngineConfig::default();
    let get = |k: &str, v: usize| env_or(k, &v.to_string()).parse().unwrap_or(v);
    EngineConfig {
        threads_per_segment: get("STEMSEP_BENCH_THREADS", d.threads_per_segment),
        segments_in_flight: get("STEMSEP_BENCH_IN_FLIGHT", d.segments_in_flight),
    }
}

/// Deterministic music-like stereo: a bass line, chords, hi-hat-like noise bursts.
pub fn synthetic_song(seconds: f64, sr: u32) -> (Vec<f32>, Vec<f32>) {
    let n = (seconds * sr as f64) as usize;
    let tau = 2.0 * std::f64::consts::PI;
    let mut noise = 0x9e37_79b9_7f4a_7c15u64;
    let (mut l, mut r) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let t = i as f64 / sr as f64;
        let beat = (t * 2.0).fract();
        let bass = 0.25 * (tau * [55.0, 65.4, 73.4, 49.0][(t / 2.0) as usize % 4] * t).sin();
        let chord: f64 = [261.6, 329.6, 392.0]
            .iter()
            .map(|f| 0.06 * (tau * f * t).sin())
            .sum();
        noise ^= noise << 13;
        noise ^= noise >> 7;
        noise ^= noise << 17;
        let hat = 0.15 * (-beat * 40.0).exp() * ((noise >> 11) as f64 / (1u64 << 53) as f64 - 0.5);
        l.push((bass + chord + hat) as f32);
        r.push((bass + 0.8 * chord - hat) as f32);
    }
    (l, r)
}

/// One segment of [`synthetic_song`] at the model's rate.
pub fn segment_audio(info: &ModelInfo) -> PlanarAudio {
    let (l, r) = synthetic_song(
        info.segment_samples as f64 / info.sample_rate as f64 + 0.1,
        info.sample_rate,
    );
    PlanarAudio {
        sample_rate: info.sample_rate,
        channels: vec![l, r],
    }
}
