//! Decode/encode with real MP3 and WAV bytes, and the errors bad input must give (never a panic).

use std::time::Duration;

use stemsep_audio::{decode, encode_mp3, probe, AudioError, PlanarAudio};
use stemsep_testkit::snr_db;

const SR: u32 = 44_100;
const LONG: Duration = Duration::from_secs(20 * 60);

/// A stereo test signal: different tones per channel and a decaying click train, so alignment
/// errors show up in the cross-correlation.
fn music(samples: usize, sr: u32) -> (Vec<f32>, Vec<f32>) {
    let tau = 2.0 * std::f64::consts::PI;
    let t = |i: usize| i as f64 / sr as f64;
    let env = |i: usize| (-((i % (sr as usize / 4)) as f64) / 2000.0).exp();
    let left = (0..samples).map(|i| {
        (0.3 * (tau * 440.0 * t(i)).sin() + 0.3 * env(i) * (tau * 1500.0 * t(i)).sin()) as f32
    });
    let right = (0..samples).map(|i| {
        (0.3 * (tau * 660.0 * t(i)).sin() + 0.2 * env(i) * (tau * 3100.0 * t(i)).sin()) as f32
    });
    (left.collect(), right.collect())
}

/// A 16-bit PCM WAV file; `declared_frames` overrides the data size the header states.
fn wav(channels: &[Vec<f32>], sr: u32, declared_frames: Option<u32>) -> Vec<u8> {
    let n = channels[0].len();
    let ch = channels.len() as u16;
    let data_len = declared_frames
        .unwrap_or(n as u32)
        .saturating_mul(2 * ch as u32);
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&data_len.saturating_add(36).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&ch.to_le_bytes());
    out.extend_from_slice(&sr.to_le_bytes());
    out.extend_from_slice(&(sr * 2 * ch as u32).to_le_bytes());
    out.extend_from_slice(&(2 * ch).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..n {
        for c in channels {
            out.extend_from_slice(&((c[i].clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes());
        }
    }
    out
}

/// A result without the samples, for assertion messages.
fn brief(r: &Result<PlanarAudio, AudioError>) -> String {
    match r {
        Ok(a) => format!("Ok({} samples at {} Hz)", a.len(), a.sample_rate),
        Err(e) => format!("Err({e:?})"),
    }
}

/// The lag (in samples, within ±`max`) at which `b` best matches `a`.
fn best_lag(a: &[f32], b: &[f32], max: isize) -> isize {
    (-max..=max)
        .max_by(|&x, &y| {
            let corr = |lag: isize| -> f64 {
                (4096..a.len() as isize - 4096)
                    .map(|i| a[i as usize] as f64 * b[(i + lag) as usize] as f64)
                    .sum()
            };
            corr(x).total_cmp(&corr(y))
        })
        .unwrap()
}

#[test]
fn mp3_round_trip_keeps_length_and_alignment() {
    let n = 2 * SR as usize + 317;
    let (l, r) = music(n, SR);
    for kbps in [320, 128] {
        let mp3 = encode_mp3(&l, &r, SR, kbps).unwrap();
        let back = decode(&mp3, LONG).unwrap();
        assert_eq!(back.sample_rate, SR);
        // The Info tag's delay/padding make the decoded length exact; the contract is one frame.
        let diff = back.len() as i64 - n as i64;
        assert!(
            diff.abs() <= 1152,
            "{kbps} kbps: decoded {} samples, encoded {n}",
            back.len()
        );
        assert_eq!(
            best_lag(&l, &back.channels[0], 1200),
            0,
            "{kbps} kbps: left channel is shifted"
        );
        assert_eq!(
            best_lag(&r, &back.channels[1], 1200),
            0,
            "{kbps} kbps: right channel is shifted"
        );
        // No encoder-delay silence or pop at the start: the first 50 ms already match.
        let head = 2205;
        let snr = snr_db(&l[..head], &back.channels[0][..head]);
        assert!(snr > 15.0, "{kbps} kbps: first 50 ms at {snr:.1} dB SNR");
        let snr = snr_db(&l, &back.channels[0][..n]);
        assert!(snr > 20.0, "{kbps} kbps: {snr:.1} dB SNR overall");
    }
}

#[test]
fn wav_mono_48k_is_duplicated_to_stereo() {
    let (l, _) = music(48_000, 48_000);
    let audio = decode(&wav(std::slice::from_ref(&l), 48_000, None), LONG).unwrap();
    assert_eq!(audio.sample_rate, 48_000);
    assert_eq!(audio.channels.len(), 2);
    assert_eq!(audio.channels[0], audio.channels[1]);
    assert_eq!(audio.len(), 48_000);
    assert!(audio.channels[0]
        .iter()
        .zip(&l)
        .all(|(a, b)| (a - b).abs() < 1e-4));
}

#[test]
fn empty_and_non_audio_inputs_are_refused() {
    assert!(matches!(decode(b"", LONG), Err(AudioError::Empty)));
    let text = b"<html><body>this is a web page, not a song</body></html>".repeat(100);
    let result = decode(&text, LONG);
    assert!(
        matches!(result, Err(AudioError::NotAudio(_))),
        "{}",
        brief(&result)
    );
    // Pseudo-random bytes may contain MP3 sync words: any bad-input error is right, a panic is not.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    match decode(&noise, LONG) {
        Err(e) => assert!(e.is_bad_input(), "{e:?}"),
        Ok(a) => panic!("noise decoded to {} samples", a.len()),
    }
}

#[test]
fn truncated_files_are_reported() {
    let (l, r) = music(5 * SR as usize, SR);
    let mp3 = encode_mp3(&l, &r, SR, 192).unwrap();
    let cut = &mp3[..mp3.len() * 2 / 5];
    match decode(cut, LONG) {
        Err(AudioError::Corrupt(msg)) => assert!(msg.contains("truncated"), "{msg}"),
        other => panic!("expected truncated, got {}", brief(&other)),
    }
    let wav_bytes = wav(&[l.clone(), r.clone()], SR, None);
    match decode(&wav_bytes[..wav_bytes.len() / 3], LONG) {
        Err(AudioError::Corrupt(msg)) => assert!(msg.contains("truncated"), "{msg}"),
        other => panic!("expected truncated, got {}", brief(&other)),
    }
    // Cut inside the first frames: nothing decodable.
    assert!(decode(&mp3[..300], LONG).unwrap_err().is_bad_input());
}

#[test]
fn corrupt_middle_is_reported() {
    let (l, r) = music(5 * SR as usize, SR);
    let mut mp3 = encode_mp3(&l, &r, SR, 192).unwrap();
    let n = mp3.len();
    let mut x = 88172645463325252u64;
    for b in &mut mp3[n / 5..n * 4 / 5] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    match decode(&mp3, LONG) {
        Err(AudioError::Corrupt(_)) => {}
        other => panic!("expected a corrupt-input error, got {}", brief(&other)),
    }
}

#[test]
fn over_long_songs_are_refused() {
    let limit = Duration::from_secs(5);
    // Header says 30 minutes (only 1 s present): refused before decoding anything.
    let (l, r) = music(SR as usize, SR);
    let lying = wav(&[l.clone(), r.clone()], SR, Some(30 * 60 * SR));
    match decode(&lying, LONG) {
        Err(AudioError::TooLong { secs, limit }) => {
            assert!(
                (secs - 1800.0).abs() < 1.0 && limit == 1200.0,
                "{secs} {limit}"
            )
        }
        other => panic!("expected TooLong, got {}", brief(&other)),
    }
    // A real 6 s MP3 with a 5 s limit.
    let (l6, r6) = music(6 * SR as usize, SR);
    let six = encode_mp3(&l6, &r6, SR, 128).unwrap();
    assert!(matches!(
        decode(&six, limit),
        Err(AudioError::TooLong { .. })
    ));
    // Header understates: a 1 s MP3's Info tag followed by 6 s more frames. Whatever the decoder
    // makes of it, we never hold more than the limit.
    let one = encode_mp3(&l, &r, SR, 128).unwrap();
    let spliced = [one.as_slice(), six.as_slice()].concat();
    match decode(&spliced, limit) {
        Err(AudioError::TooLong { secs, .. }) => assert!(secs > 5.0, "{secs}"),
        Ok(audio) => assert!(audio.seconds() <= 5.0, "{} s decoded", audio.seconds()),
        Err(e) => panic!("expected TooLong or a bounded decode, got {e:?}"),
    }
    assert!(decode(&six, LONG).is_ok());
}

#[test]
fn probe_and_decode_give_the_same_verdict() {
    // The REST server answers with `probe`, the worker with `decode`: one pass over the packets,
    // so every input gets the same verdict (and the same length) from both.
    let (l, r) = music(3 * SR as usize, SR);
    let mp3 = encode_mp3(&l, &r, SR, 128).unwrap();
    let wav_bytes = wav(&[l.clone(), r.clone()], SR, None);
    let lying = wav(&[l.clone(), r.clone()], SR, Some(30 * 60 * SR));
    let limit = Duration::from_secs(2);
    let cases: Vec<(&str, Vec<u8>, Duration)> = vec![
        ("mp3", mp3.clone(), LONG),
        ("wav", wav_bytes.clone(), LONG),
        ("mp3 over the limit", mp3.clone(), limit),
        ("wav over the limit", wav_bytes.clone(), limit),
        ("truncated mp3", mp3[..mp3.len() / 3].to_vec(), LONG),
        (
            "truncated wav",
            wav_bytes[..wav_bytes.len() / 3].to_vec(),
            LONG,
        ),
        ("header lies", lying, LONG),
        ("first bytes", mp3[..300].to_vec(), LONG),
        ("text", b"not a song at all".repeat(50), LONG),
        ("empty", Vec::new(), LONG),
    ];
    for (what, bytes, max) in cases {
        let probed = probe(&bytes, max);
        let decoded = decode(&bytes, max);
        match (&probed, &decoded) {
            (Ok(info), Ok(audio)) => {
                assert_eq!(info.sample_rate, audio.sample_rate, "{what}");
                assert!(
                    (info.seconds - audio.seconds()).abs() < 1e-9,
                    "{what}: probe {} s, decode {} s",
                    info.seconds,
                    audio.seconds()
                );
            }
            (Err(p), Err(d)) => assert_eq!(
                std::mem::discriminant(p),
                std::mem::discriminant(d),
                "{what}: probe {p:?}, decode {d:?}"
            ),
            _ => panic!("{what}: probe {probed:?}, decode {}", brief(&decoded)),
        }
    }
}

#[test]
fn probe_measures_real_mp3s_and_refuses_junk() {
    let info = probe(&stemsep_testkit::tone_mp3(440.0, 2.0, 1), LONG).unwrap();
    assert_eq!((info.sample_rate, info.channels), (44_100, 2));
    // LAME's delay and padding are trimmed (gapless), as the worker's decode trims them.
    assert!((1.95..2.05).contains(&info.seconds), "{}", info.seconds);
    for junk in [
        b"hello world, not music".to_vec(),
        vec![0u8; 4096],
        (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect(),
    ] {
        let e = probe(&junk, LONG).unwrap_err();
        assert!(e.is_bad_input(), "{e:?}");
    }
}

#[test]
fn probe_refuses_long_songs_by_their_frames() {
    // 90 s of 8 kHz MPEG-2.5 frames: no header states a length, the frames are counted.
    let long = stemsep_testkit::silent_mp3(90.0);
    assert!(matches!(
        probe(&long, Duration::from_secs(60)),
        Err(AudioError::TooLong { .. })
    ));
    let ok = probe(&long, Duration::from_secs(120)).unwrap();
    assert!((89.5..91.0).contains(&ok.seconds), "{}", ok.seconds);
}
