//! What must hold for any bytes handed to the audio reader, whatever they are: the fuzz target
//! `decode` runs it on every input libFuzzer makes, and `tests/fuzz_corpus.rs` replays the
//! committed corpus through it on stable in `make test`.
//!
//! A panic caught inside the reader is not a failure here (it becomes an error, as it must);
//! one that escapes is, and so is an abort, a leak past libFuzzer's memory limit or a hang.

use std::time::Duration;

use stemsep_audio::{decode, probe, AudioError};

/// The service's own limit on song length (`STEMSEP_MAX_SECONDS`' default).
const LIMIT: Duration = Duration::from_secs(1200);

/// A short limit, to check that the length rule holds on whatever the input turns out to be.
const SHORT: Duration = Duration::from_millis(500);

/// Reads `data` as the REST server (probe) and the worker (decode) do, and checks that they
/// agree, that every failure is the input's fault, and that what decodes is sound PCM.
pub fn check(data: &[u8]) {
    let probed = probe(data, LIMIT);
    let decoded = decode(data, LIMIT);
    match (&probed, &decoded) {
        (Ok(info), Ok(audio)) => {
            assert_eq!(audio.sample_rate, info.sample_rate);
            assert!(info.sample_rate > 0 && info.channels > 0, "{info:?}");
            assert_eq!(audio.channels.len(), 2, "decode gives stereo");
            let (left, right) = (&audio.channels[0], &audio.channels[1]);
            assert_eq!(left.len(), right.len());
            assert!(!left.is_empty());
            assert_eq!(
                audio.seconds(),
                info.seconds,
                "probe and decode count alike"
            );
            assert!(info.seconds <= LIMIT.as_secs_f64(), "{info:?}");
            // Non-finite samples would turn the whole song to NaN in the engine's normalisation
            // and reach LAME, whose quantiser indexes tables with them.
            assert!(
                left.iter().chain(right).all(|s| s.is_finite()),
                "decoded samples must be finite"
            );
            if info.seconds > SHORT.as_secs_f64() {
                assert!(
                    matches!(probe(data, SHORT), Err(AudioError::TooLong { .. })),
                    "{} s of audio passes a {} s limit",
                    info.seconds,
                    SHORT.as_secs_f64()
                );
            }
        }
        (Err(p), Err(d)) => {
            assert_eq!(p.to_string(), d.to_string(), "probe and decode fail alike");
            assert!(p.is_bad_input(), "bad bytes are the input's fault: {p:?}");
        }
        _ => panic!(
            "probe and decode disagree: {:?} / {:?}",
            probed,
            decoded.map(|a| (a.sample_rate, a.len()))
        ),
    }
}
