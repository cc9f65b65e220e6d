//! The whole Rust pipeline (normalise → chunk → STFT → tract core → iSTFT → overlap-add →
//! de-normalise) on the committed tiny model and golden clip, against the stems demucs'
//! `Separator` (apply_model, shifts 0, overlap 0.25) produced for it: `model/tiny/golden/`; and,
//! run by `make bench-fidelity`, the same on a full-size export.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use stemsep_engine::PlanarAudio;
use stemsep_engine::{EngineConfig, Separator};
use stemsep_testkit::snr_db;

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../model/tiny")
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn tiny_model_matches_apply_model_golden_stems() {
    // Segments side by side on one thread each, one segment on a pool, side by side on pools of
    // their own, and (4 chunks, 3 in flight) the leftover one alongside the first three.
    for (threads_per_segment, segments_in_flight) in [(1, 2), (2, 1), (4, 2), (2, 3)] {
        let config = EngineConfig {
            threads_per_segment,
            segments_in_flight,
        };
        println!("{config:?}");
        matches_golden(&tiny().join("tiny.onnx"), &tiny().join("golden"), config);
    }
}

#[test]
fn tiny_family_matches_apply_model_golden_stems() {
    // A 6-source model, two-member bags with one-hot weights (htdemucs_ft's form: each member
    // gives some sources) and mixed ones (every source a weighted mean of both members), and an
    // HDemucs, whose chunks run at their own length (the clip's last is 2001 samples, shorter than
    // the STFT's reflect padding), each against apply_model on the whole bag.
    for variant in ["6s", "bag-onehot", "bag-mixed", "hdemucs"] {
        let config = EngineConfig {
            threads_per_segment: 2,
            segments_in_flight: 2,
        };
        println!("{variant} {config:?}");
        matches_golden(
            &tiny().join(variant),
            &tiny().join(format!("golden-{variant}")),
            config,
        );
    }
}

/// The same on full-size exports, whose large products, convolutions and transposed convolutions
/// take the engine's own kernels (the tiny models' are too small to): every model directory in
/// `$STEMSEP_FULLSIZE_DIR` with golden stems beside it (`<name>/` and `<name>-golden/`, as `make
/// model-check` exports the Demucs family through demucs' own `get_model`), run by `make
/// bench-fidelity`.
#[test]
#[ignore = "needs full-size exports and their golden stems (torch): make bench-fidelity"]
fn full_size_models_match_apply_model_golden_stems() {
    let dir: PathBuf = std::env::var_os("STEMSEP_FULLSIZE_DIR")
        .expect("set STEMSEP_FULLSIZE_DIR (make bench-fidelity does)")
        .into();
    let mut models: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("manifest.json").is_file())
        .filter(|p| golden_of(p).join("meta.json").is_file())
        .collect();
    models.sort();
    assert!(
        !models.is_empty(),
        "no model with golden stems in {}",
        dir.display()
    );
    // The products shared out over two threads, and the default (segments side by side).
    let pooled = EngineConfig {
        threads_per_segment: 2,
        segments_in_flight: 1,
    };
    // Every model's figures are printed before any verdict, so one run reports the family.
    let mut short = Vec::new();
    for model in &models {
        for config in [pooled, EngineConfig::default()] {
            println!("{} {config:?}", model.display());
            for (name, snr) in golden_snr(model, &golden_of(model), config) {
                if snr < 80.0 {
                    short.push(format!("{} {name}: {snr:.1} dB", model.display()));
                }
            }
        }
    }
    assert!(short.is_empty(), "below 80 dB: {short:#?}");
}

/// `<dir>/<name>-golden` for the model `<dir>/<name>`.
fn golden_of(model: &Path) -> PathBuf {
    let mut name = model.file_name().unwrap_or_default().to_owned();
    name.push("-golden");
    model.with_file_name(name)
}

/// Separates `golden/mix.f32` with `model` and compares every stem with `golden/stems.f32`:
/// at least 80 dB SNR each.
fn matches_golden(model: &Path, golden_dir: &Path, config: EngineConfig) {
    for (name, snr) in golden_snr(model, golden_dir, config) {
        assert!(snr >= 80.0, "{name}: {snr:.1} dB < 80 dB");
    }
}

/// Separates `golden/mix.f32` with `model` (checking the progress it reports and the stems'
/// shape) and returns each stem's SNR against `golden/stems.f32`, printing it.
fn golden_snr(model: &Path, golden_dir: &Path, config: EngineConfig) -> Vec<(String, f64)> {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden_dir.join("meta.json")).unwrap())
            .unwrap();
    let len = meta["length"].as_u64().unwrap() as usize;
    let mix = read_f32(&golden_dir.join("mix.f32"));
    let golden = read_f32(&golden_dir.join("stems.f32"));
    let audio = PlanarAudio {
        sample_rate: 44_100,
        channels: mix.chunks_exact(len).map(<[f32]>::to_vec).collect(),
    };

    let separator = Separator::load_with(model, config).unwrap();
    let info = separator.info();
    let sources: Vec<&str> = meta["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(info.sources, sources);

    let seen = Mutex::new(Vec::new());
    let stems = separator
        .separate_planar(audio, &|p| seen.lock().unwrap().push(p))
        .unwrap();
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.first(), Some(&0));
    assert_eq!(seen.last(), Some(&100));
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "progress went backwards: {seen:?}"
    );
    assert_eq!(seen.len(), 1 + meta["chunks"].as_array().unwrap().len());

    assert_eq!(stems.len(), sources.len());
    let mut snrs = Vec::new();
    for (s, name) in sources.iter().enumerate() {
        assert_eq!(stems[s].len(), 2);
        let est: Vec<f32> = stems[s].concat();
        assert_eq!(est.len(), 2 * len);
        let reference = &golden[s * 2 * len..(s + 1) * 2 * len];
        let snr = snr_db(reference, &est);
        println!("{name}: {snr:.1} dB SNR against apply_model");
        snrs.push((name.to_string(), snr));
    }
    snrs
}
