//! Every kind of audio the service accepts and every kind it writes, as real bytes: the inputs
//! (WAV, FLAC written here; Ogg Vorbis, AAC in MP4 and in ADTS from committed fixtures, see
//! `tests/data/make_fixtures.py`) decode to the right rate, channels, length and signal, and a
//! truncated or damaged file of each kind is a bad-input error, never a panic or a success.

use std::path::Path;
use std::time::Duration;

use stemsep_audio::{
    add_master, decode, master_writer, probe, AudioError, ClipMode, Depth, FlacWriter, Format,
    PlanarAudio,
};
use stemsep_testkit::snr_db;

const SR: u32 = 44_100;
const LONG: Duration = Duration::from_secs(600);
/// The fixtures' length: 3 s.
const FIXTURE_SAMPLES: usize = 3 * SR as usize;

/// The fixtures' chord (make_fixtures.py), left and right.
fn chord(n: usize) -> [Vec<f32>; 2] {
    let tone = |a: f64, b: f64| -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = i as f64 / SR as f64;
                let w = 2.0 * std::f64::consts::PI * t;
                (0.3 * (w * a).sin() + 0.2 * (w * b).sin()) as f32
            })
            .collect()
    };
    [tone(220.0, 330.0), tone(277.0, 415.0)]
}

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The best SNR of `got` against `want` over lags within ±`max` samples (lossy codecs may keep
/// their priming), and that lag.
fn aligned_snr(want: &[f32], got: &[f32], max: usize) -> (f64, isize) {
    let n = want.len().min(got.len()).saturating_sub(2 * max);
    (-(max as isize)..=max as isize)
        .step_by(1)
        .map(|lag| {
            let w = &want[max..max + n];
            let g = &got[(max as isize + lag) as usize..(max as isize + lag) as usize + n];
            (snr_db(w, g), lag)
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap()
}

/// `audio` through `format` with `clip`, and back through the decoder.
fn round_trip(format: Format, clip: ClipMode, audio: &[Vec<f32>]) -> PlanarAudio {
    let bytes = format.encode(audio, SR, clip).unwrap();
    decode(&bytes, LONG).unwrap_or_else(|e| panic!("{format}: {e}"))
}

/// The largest magnitude of any sample.
fn peak(channels: &[Vec<f32>]) -> f32 {
    channels
        .iter()
        .flatten()
        .fold(0.0f32, |m, x| m.max(x.abs()))
}

fn shape(audio: &PlanarAudio) -> String {
    format!(
        "{} ch × {} at {} Hz",
        audio.channels.len(),
        audio.len(),
        audio.sample_rate
    )
}

#[test]
fn every_input_kind_decodes_to_the_song() {
    let want = chord(FIXTURE_SAMPLES);
    let wav = Format::Wav(Depth::Int16)
        .encode(&want, SR, ClipMode::None)
        .unwrap();
    let flac = Format::Flac(Depth::Int24)
        .encode(&want, SR, ClipMode::None)
        .unwrap();
    for (kind, bytes, floor_db, slack) in [
        ("WAV", wav, 80.0, 0),
        ("FLAC", flac, 100.0, 0),
        ("Ogg Vorbis", fixture("song.ogg"), 15.0, 0),
        // AAC keeps the encoder's priming and padding (up to about three frames): ADTS has no
        // field for them, and symphonia 0.5 does not apply an MP4 edit list. Stems of an AAC
        // upload start that much late; the lag below is measured, not assumed.
        ("AAC in MP4", fixture("song.m4a"), 15.0, 3 * 1024),
        ("AAC in ADTS", fixture("song.aac"), 15.0, 3 * 1024),
    ] {
        let info = probe(&bytes, LONG).unwrap_or_else(|e| panic!("{kind}: {e}"));
        let audio = decode(&bytes, LONG).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(
            (audio.sample_rate, audio.channels.len()),
            (SR, 2),
            "{kind}: {}",
            shape(&audio)
        );
        assert_eq!(info.sample_rate, SR, "{kind}");
        let extra = audio.len() as i64 - FIXTURE_SAMPLES as i64;
        assert!(
            (0..=slack as i64).contains(&extra),
            "{kind}: {} against {FIXTURE_SAMPLES} samples",
            shape(&audio)
        );
        assert!(
            (info.seconds - audio.seconds()).abs() < 1e-9,
            "{kind}: probe and decode agree"
        );
        for (c, (want, got)) in want.iter().zip(&audio.channels).enumerate() {
            let (snr, lag) = aligned_snr(want, got, 3200);
            eprintln!(
                "{kind}: {} · channel {c}: {snr:.1} dB at lag {lag}",
                shape(&audio)
            );
            assert!(snr > floor_db, "{kind} channel {c}: {snr:.1} dB");
        }
    }
}

#[test]
fn a_cut_or_damaged_file_of_every_kind_is_bad_input() {
    let want = chord(FIXTURE_SAMPLES);
    let flac = Format::Flac(Depth::Int16)
        .encode(&want, SR, ClipMode::None)
        .unwrap();
    for (kind, bytes) in [
        ("FLAC", flac),
        ("Ogg Vorbis", fixture("song.ogg")),
        ("AAC in MP4", fixture("song.m4a")),
        ("AAC in ADTS", fixture("song.aac")),
    ] {
        let n = bytes.len();
        // A third of the file; only the first few hundred bytes; the middle overwritten.
        let mut damaged = bytes.clone();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for b in &mut damaged[n / 5..n * 4 / 5] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let mut cases = vec![
            ("cut to 200 bytes", &bytes[..200]),
            ("damaged in the middle", &damaged[..]),
        ];
        // An ADTS stream declares no length: cut between frames it is a shorter song, which is
        // what any decoder makes of it.
        if kind != "AAC in ADTS" {
            cases.push(("cut to a third", &bytes[..n / 3]));
        }
        for (how, input) in cases {
            let decoded = decode(input, LONG);
            let probed = probe(input, LONG);
            match (&decoded, &probed) {
                (Err(d), Err(p)) => {
                    assert!(d.is_bad_input(), "{kind} {how}: {d}");
                    assert_eq!(d.to_string(), p.to_string(), "{kind} {how}: one verdict");
                }
                _ => panic!(
                    "{kind} {how}: decode {:?}, probe {:?}",
                    decoded.as_ref().map(shape).map_err(AudioError::to_string),
                    probed.map_err(|e| e.to_string())
                ),
            }
        }
    }
}

#[test]
fn every_output_format_decodes_back_with_its_precision() {
    // A little beyond full scale at the peaks: what 16-bit would clip.
    let [l, r] = chord(SR as usize);
    let loud = [
        l.iter().map(|x| x * 2.2).collect::<Vec<f32>>(),
        r.iter().map(|x| x * 2.2).collect(),
    ];
    let loudest = peak(&loud);
    assert!(loudest > 1.0);
    for (format, clip, floor_db) in [
        (Format::Wav(Depth::Float32), ClipMode::None, 140.0),
        (Format::Wav(Depth::Int24), ClipMode::Rescale, 120.0),
        (Format::Flac(Depth::Int24), ClipMode::Rescale, 120.0),
        (Format::Wav(Depth::Int16), ClipMode::Rescale, 80.0),
        (Format::Flac(Depth::Int16), ClipMode::Rescale, 80.0),
        (Format::MP3_320, ClipMode::Rescale, 20.0),
    ] {
        let back = round_trip(format, clip, &loud);
        assert_eq!(
            (back.sample_rate, back.channels.len(), back.len()),
            (SR, 2, SR as usize),
            "{format}"
        );
        // Rescale divides the whole file by 1.01 × its peak.
        let gain = match clip {
            ClipMode::Rescale => 1.0 / (1.01 * loudest),
            _ => 1.0,
        };
        for (c, (loud, got)) in loud.iter().zip(&back.channels).enumerate() {
            let want: Vec<f32> = loud.iter().map(|x| x * gain).collect();
            let snr = snr_db(&want, got);
            eprintln!("{format} ({clip}): channel {c} {snr:.1} dB");
            assert!(snr > floor_db, "{format}: {snr:.1} dB");
        }
    }
    // Without rescaling, 16 bit saturates at full scale (never wraps to the other sign), and
    // float keeps the peaks.
    let clipped = round_trip(Format::Wav(Depth::Int16), ClipMode::None, &loud);
    for (x, y) in loud[0].iter().zip(&clipped.channels[0]) {
        assert!(
            x.signum() == y.signum() || *y == 0.0 || x.abs() < 1e-4,
            "{x} became {y}"
        );
    }
    let kept = peak(&round_trip(Format::Wav(Depth::Float32), ClipMode::None, &loud).channels);
    assert_eq!(kept, loudest, "float WAV keeps what 16-bit clips");
}

#[test]
fn flac_streamed_block_by_block_is_the_flac_written_at_once() {
    let [left, right] = chord(FIXTURE_SAMPLES + 1234);
    let whole = Format::Flac(Depth::Int24)
        .encode(&[left.clone(), right.clone()], SR, ClipMode::None)
        .unwrap();
    let mut writer = FlacWriter::new(SR, Depth::Int24, 1.0).unwrap();
    // Blocks of every awkward size: shorter than a FLAC frame, across frames, one sample.
    let mut at = 0;
    for (i, n) in [1usize, 777, 4096, 10_000, 3].iter().cycle().enumerate() {
        let end = (at + n).min(left.len());
        writer.push(&left[at..end], &right[at..end]).unwrap();
        at = end;
        if at == left.len() || i > 10_000 {
            break;
        }
    }
    assert_eq!(writer.finish().unwrap(), whole);
    let back = decode(&whole, LONG).unwrap();
    assert_eq!(back.len(), left.len(), "{}", shape(&back));
    assert!(writer_rejects_ragged_channels());
}

fn writer_rejects_ragged_channels() -> bool {
    let mut writer = FlacWriter::new(SR, Depth::Int16, 1.0).unwrap();
    writer.push(&[0.0; 3], &[0.0; 2]).is_err() && FlacWriter::new(SR, Depth::Float32, 1.0).is_err()
}

#[test]
fn masters_keep_stems_beyond_full_scale() {
    let [left, right] = chord(SR as usize);
    // A stem 2.5 times louder than full scale: 16-bit files would clip it.
    let loud: Vec<Vec<f32>> = [left, right]
        .iter()
        .map(|c| c.iter().map(|x| x * 5.0).collect())
        .collect();
    assert!(peak(&loud) > 2.0);
    let mut master = master_writer(SR).unwrap();
    master.push(&loud[0], &loud[1]).unwrap();
    let bytes = master.finish().unwrap();
    // Added twice into one mix: the stems' sum, at their level.
    let mut mix = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        assert_eq!(add_master(&bytes, &mut mix).unwrap(), SR);
    }
    for (want, got) in loud.iter().zip(&mix) {
        let got: Vec<f32> = got.iter().map(|x| x / 2.0).collect();
        let snr = snr_db(want, &got);
        assert!(snr > 125.0, "master: {snr:.1} dB");
    }
}
