//! The public entry point end to end on the committed tiny model: real MP3 bytes in, four MP3s
//! out; lengths, track order, continuity across segment joins, and bad input through the facade.

use std::path::{Path, PathBuf};
use std::time::Duration;

use stemsep_common::job::Track;
use stemsep_worker::engine::audio::decode::decode;
use stemsep_worker::engine::audio::encode::encode_mp3;
use stemsep_worker::engine::audio::PlanarAudio;
use stemsep_worker::{EngineConfig, EngineError, SeparateOptions, Separator};

fn tiny_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/tiny/tiny.onnx")
}

fn separator() -> Separator {
    let config = EngineConfig {
        threads_per_segment: 1,
        segments_in_flight: 2,
    };
    Separator::load_with(&tiny_model(), config).expect("tiny model loads")
}

fn tone(samples: usize, sr: u32, hz: f64) -> Vec<f32> {
    (0..samples)
        .map(|i| (0.4 * (2.0 * std::f64::consts::PI * hz * i as f64 / sr as f64).sin()) as f32)
        .collect()
}

#[test]
fn separator_is_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Separator>();
}

#[test]
fn mp3_in_four_mp3_stems_out_with_the_input_length() {
    let sep = separator();
    let n = 3 * 44_100 + 1234;
    let (l, r) = (tone(n, 44_100, 220.0), tone(n, 44_100, 330.0));
    let input = encode_mp3(&l, &r, 44_100, 192).unwrap();
    let opts = SeparateOptions {
        bitrate_kbps: 128,
        ..Default::default()
    };
    let stems = sep.separate_mp3(&input, &opts, &|_| {}).unwrap();
    let tracks: Vec<Track> = stems.iter().map(|(t, _)| *t).collect();
    assert_eq!(tracks, Track::ALL);
    for (track, mp3) in &stems {
        let audio = decode(mp3, Duration::from_secs(60)).unwrap();
        assert_eq!(audio.sample_rate, 44_100);
        let diff = audio.len() as i64 - n as i64;
        assert!(
            diff.abs() <= 1152,
            "{track}: {} samples for {n} in",
            audio.len()
        );
        let peak = audio.channels[0].iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(peak > 1e-4, "{track} is silent");
    }
}

#[test]
fn other_sample_rates_come_out_at_the_models_rate() {
    let sep = separator();
    // 1.5 s at 22.05 kHz: shorter than two segments, resampled up.
    let n = 33_075;
    let audio = PlanarAudio {
        sample_rate: 22_050,
        channels: vec![tone(n, 22_050, 440.0); 2],
    };
    let stems = sep.separate_planar(audio, &|_| {}).unwrap();
    assert_eq!(stems.len(), 4);
    assert!(stems.iter().all(|s| s.len() == 2 && s[0].len() == 2 * n));
}

#[test]
fn streamed_stems_are_seamless_across_segment_joins() {
    // separate_mp3 hands each finished stretch (one per segment join) to the encoder as soon as it
    // is final. Any sample lost, repeated or altered at a join would change the MP3: the streamed
    // file must be byte-identical to encoding the whole in-memory separation in one go. (The
    // overlap-add at the joins themselves is checked against demucs by engine_fidelity.)
    let sep = separator();
    let info = sep.info().clone();
    let n = 4 * info.segment_samples + 777;
    let (l, r) = (tone(n, 44_100, 110.0), tone(n, 44_100, 165.0));
    let input = encode_mp3(&l, &r, 44_100, 320).unwrap();
    let opts = SeparateOptions {
        bitrate_kbps: 192,
        ..Default::default()
    };
    let streamed = sep.separate_mp3(&input, &opts, &|_| {}).unwrap();
    let mix = decode(&input, Duration::from_secs(60)).unwrap();
    let whole = sep.separate_planar(mix, &|_| {}).unwrap();
    for (track, mp3) in &streamed {
        let s = info
            .sources
            .iter()
            .position(|name| name == track.name())
            .unwrap();
        let expected = encode_mp3(&whole[s][0], &whole[s][1], 44_100, 192).unwrap();
        assert!(
            *mp3 == expected,
            "{track}: streamed MP3 differs from the one-shot encoding"
        );
    }
}

#[test]
fn every_schedule_gives_the_same_samples() {
    // How segments share the cores (one after another, side by side, the leftover of an odd count
    // alongside the first ones) must not change a sample: each segment is computed on its own and
    // the overlap-add adds them in song order, whatever order they finish in. (One thread per
    // segment throughout: products split over threads add in another order, so a pooled segment
    // differs in the last bits; engine_fidelity holds those to apply_model.)
    let info = separator().info().clone();
    // Five segments: with two in flight, three open the song and two follow.
    let n = 3 * info.segment_samples + 777;
    let run = |threads_per_segment, segments_in_flight| {
        let config = EngineConfig {
            threads_per_segment,
            segments_in_flight,
        };
        let audio = PlanarAudio {
            sample_rate: 44_100,
            channels: vec![tone(n, 44_100, 110.0), tone(n, 44_100, 165.0)],
        };
        Separator::load_with(&tiny_model(), config)
            .unwrap()
            .separate_planar(audio, &|_| {})
            .unwrap()
    };
    let one_by_one = run(1, 1);
    for (threads, in_flight) in [(2, 2), (1, 3), (2, 4)] {
        assert!(
            run(threads, in_flight) == one_by_one,
            "{threads} threads, {in_flight} in flight: the stems differ from one segment at a time"
        );
    }
}

#[test]
fn bad_input_through_the_facade() {
    let sep = separator();
    let opts = SeparateOptions {
        max_duration: Duration::from_secs(2),
        ..Default::default()
    };
    let err = |bytes: &[u8]| sep.separate_mp3(bytes, &opts, &|_| {}).unwrap_err();
    assert!(matches!(err(b""), EngineError::Empty));
    assert!(matches!(
        err(b"just some text, definitely not a song"),
        EngineError::NotAudio(_)
    ));
    let l = tone(3 * 44_100, 44_100, 440.0);
    let long = encode_mp3(&l, &l, 44_100, 128).unwrap();
    let e = err(&long);
    assert!(matches!(e, EngineError::TooLong { .. }), "{e:?}");
    assert!(e.to_string().contains("limit"), "{e}");
    assert!(err(&long[..long.len() / 2]).is_bad_input());
    let bad_rate = SeparateOptions {
        bitrate_kbps: 300,
        ..Default::default()
    };
    let short = encode_mp3(&l[..44_100], &l[..44_100], 44_100, 128).unwrap();
    assert!(matches!(
        sep.separate_mp3(&short, &bad_rate, &|_| {}),
        Err(EngineError::Bitrate(300))
    ));
}
