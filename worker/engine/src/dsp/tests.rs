//! The host DSP without a model: STFT and iSTFT against demucs' own `_spec`/`_ispec` (fixtures
//! made by `tests/fixtures/stft/make.py` with torch), the round trip, and resampling.

use std::path::Path;

use super::resample::resample;
use super::stft::Stft;

fn fixture(name: &str) -> Vec<f32> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/stft")
        .join(name);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// max |a - b| / max |b|
fn rel_max_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let peak = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / peak
}

#[test]
fn stft_matches_demucs_spec() {
    let stft = Stft::new(256, 64, 2000).unwrap();
    assert_eq!((stft.bins(), stft.frames()), (128, 32));
    let spec = stft.forward(&fixture("signal.f32"), 2);
    let err = rel_max_err(&spec, &fixture("spec.f32"));
    assert!(err < 1e-5, "relative error {err}");
}

#[test]
fn istft_matches_demucs_ispec() {
    let stft = Stft::new(256, 64, 2000).unwrap();
    let out = stft.inverse(&fixture("ispec_in.f32"), 2);
    let err = rel_max_err(&out, &fixture("ispec_out.f32"));
    assert!(err < 1e-5, "relative error {err}");
}

#[test]
fn stft_istft_round_trip_at_model_geometry() {
    // The tiny model's geometry; a signal with no energy at Nyquist. The segment's ends are not
    // reconstructed by design (dropped edge frames), so compare the interior.
    let (n_fft, t) = (4096, 44_100);
    let stft = Stft::new(n_fft, 1024, t).unwrap();
    let x: Vec<f32> = (0..2 * t)
        .map(|i| {
            let n = (i % t) as f32;
            0.5 * (n * 0.013).sin()
                + 0.25 * (n * 0.31 + (i / t) as f32).cos()
                + 0.1 * (n * 1.7).sin()
        })
        .collect();
    let y = stft.inverse(&stft.forward(&x, 2), 2);
    for c in 0..2 {
        let range = c * t + n_fft..(c + 1) * t - n_fft;
        let err = rel_max_err(&y[range.clone()], &x[range]);
        assert!(err < 1e-5, "channel {c}: relative error {err}");
    }
}

#[test]
fn resample_keeps_length_and_timing() {
    let n = 48_000 * 2 + 17;
    let tone =
        |rate: f64, i: usize| (2.0 * std::f64::consts::PI * 440.0 * i as f64 / rate).sin() as f32;
    let x: Vec<f32> = (0..n).map(|i| tone(48_000.0, i)).collect();
    let y = resample(vec![x.clone(), x], 48_000, 44_100).unwrap();
    assert_eq!(
        y[0].len(),
        (n as f64 * 44_100.0 / 48_000.0).round() as usize
    );
    let err = (4_000..y[0].len() - 4_000)
        .map(|i| (y[0][i] - tone(44_100.0, i)).abs())
        .fold(0.0, f32::max);
    assert!(err < 1e-3, "max error {err}");
}
