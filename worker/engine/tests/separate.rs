//! The public API end to end on the committed tiny model: real MP3 bytes decoded, separated and
//! streamed into MP3 sinks; lengths, source order, mixes of sources, continuity across segment
//! joins, every schedule of segments over the cores, and bad input.

use std::path::{Path, PathBuf};
use std::time::Duration;

use stemsep_audio::{decode, encode_mp3, AudioError, PlanarAudio};
use stemsep_engine::{EncodeSink, EngineConfig, EngineError, Separator};

fn tiny_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../model/tiny/tiny.onnx")
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

/// Decodes `mp3` and separates it into one MP3 per entry of `mixes` at `kbps`.
fn separate_to_mp3(sep: &Separator, mp3: &[u8], mixes: Vec<Vec<usize>>, kbps: u32) -> Vec<Vec<u8>> {
    let audio = decode(mp3, Duration::from_secs(60)).unwrap();
    let mut sink = EncodeSink::mp3(mixes, sep.info().sample_rate, kbps).unwrap();
    sep.separate(audio, &mut sink, &|_| {}).unwrap();
    sink.finish().unwrap()
}

#[test]
fn mp3_in_one_mp3_per_source_out_with_the_input_length() {
    let sep = separator();
    let n = 3 * 44_100 + 1234;
    let (l, r) = (tone(n, 44_100, 220.0), tone(n, 44_100, 330.0));
    let input = encode_mp3(&l, &r, 44_100, 192).unwrap();
    let sources = sep.info().sources.clone();
    assert_eq!(sources, ["drums", "bass", "other", "vocals"]);
    let stems = separate_to_mp3(&sep, &input, (0..4).map(|s| vec![s]).collect(), 128);
    assert_eq!(stems.len(), sources.len());
    for (name, mp3) in sources.iter().zip(&stems) {
        let audio = decode(mp3, Duration::from_secs(60)).unwrap();
        assert_eq!(audio.sample_rate, 44_100);
        let diff = audio.len() as i64 - n as i64;
        assert!(
            diff.abs() <= 1152,
            "{name}: {} samples for {n} in",
            audio.len()
        );
        let peak = audio.channels[0].iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(peak > 1e-4, "{name} is silent");
    }
}

#[test]
fn a_mix_output_is_the_sum_of_its_sources() {
    // The sink's mixes (several sources into one output; none for silence) are summed before
    // encoding: byte for byte what encoding the summed in-memory stems gives.
    let sep = separator();
    let n = 2 * 44_100 + 99;
    let input = encode_mp3(
        &tone(n, 44_100, 196.0),
        &tone(n, 44_100, 294.0),
        44_100,
        192,
    )
    .unwrap();
    let streamed = separate_to_mp3(&sep, &input, vec![vec![0, 1, 2], vec![]], 160);
    let stems = sep
        .separate_planar(decode(&input, Duration::from_secs(60)).unwrap(), &|_| {})
        .unwrap();
    let sum = |c: usize| -> Vec<f32> {
        (0..stems[0][c].len())
            .map(|i| stems[0][c][i] + stems[1][c][i] + stems[2][c][i])
            .collect()
    };
    assert!(streamed[0] == encode_mp3(&sum(0), &sum(1), 44_100, 160).unwrap());
    let silence = vec![0.0f32; stems[0][0].len()];
    assert!(streamed[1] == encode_mp3(&silence, &silence, 44_100, 160).unwrap());
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
    let streamed = separate_to_mp3(&sep, &input, (0..4).map(|s| vec![s]).collect(), 192);
    let mix = decode(&input, Duration::from_secs(60)).unwrap();
    let whole = sep.separate_planar(mix, &|_| {}).unwrap();
    for (s, mp3) in streamed.iter().enumerate() {
        let expected = encode_mp3(&whole[s][0], &whole[s][1], 44_100, 192).unwrap();
        assert!(
            *mp3 == expected,
            "{}: streamed MP3 differs from the one-shot encoding",
            info.sources[s]
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
fn audio_the_model_cannot_take_is_refused_as_bad_input() {
    let sep = separator();
    let stereo = |n: usize| PlanarAudio {
        sample_rate: 44_100,
        channels: vec![tone(n, 44_100, 440.0); 2],
    };
    let mono = PlanarAudio {
        sample_rate: 44_100,
        channels: vec![tone(1000, 44_100, 440.0)],
    };
    let e = sep.separate_planar(mono, &|_| {}).unwrap_err();
    assert!(
        matches!(e, EngineError::Input(_)) && e.is_bad_input(),
        "{e:?}"
    );
    let e = sep.separate_planar(stereo(0), &|_| {}).unwrap_err();
    assert!(
        matches!(e, EngineError::Audio(AudioError::NoAudio)) && e.is_bad_input(),
        "{e:?}"
    );
    assert!(matches!(
        EncodeSink::per_source(4, 44_100, 300),
        Err(EngineError::Audio(AudioError::Bitrate(300)))
    ));
    // A mix naming a source the model does not have fails the song, not the process.
    let mut sink = EncodeSink::mp3(vec![vec![7]], 44_100, 128).unwrap();
    let e = sep.separate(stereo(2000), &mut sink, &|_| {}).unwrap_err();
    assert!(matches!(e, EngineError::Input(_)), "{e:?}");
}
