//! Is this upload a real MP3, and how long is it? Answered with symphonia before anything is
//! stored, so junk never reaches storage or the queue.
//!
//! The container is probed, the first packets are decoded (a file that merely starts with an MP3
//! sync word fails here), then every remaining frame header is walked to measure the duration.
//! Headers are counted rather than trusting a Xing/Info tag, which a client could forge; walking
//! headers costs little next to the body limit (at most ~12 MiB of MP3 after base64).

use std::io::Cursor;

use bytes::Bytes;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_MP3, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// Packets that must decode before a file counts as MP3.
const DECODE_CHECK_PACKETS: usize = 8;

/// What the probe learned about a valid upload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mp3Info {
    /// Duration, seconds (from the frame count).
    pub seconds: f64,
    /// Sample rate, Hz.
    pub sample_rate: u32,
    /// Channel count.
    pub channels: usize,
}

/// Why an upload was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeVerdict {
    /// Not an MP3 symphonia can decode; the text says what failed.
    NotMp3(String),
    /// A valid MP3 longer than the limit: `(seconds counted so far, limit)`.
    TooLong(f64, u64),
}

/// Checks `mp3` is a decodable MP3 no longer than `max_seconds`. CPU-bound: call it from a
/// blocking pool.
pub fn probe(mp3: Bytes, max_seconds: u64) -> Result<Mp3Info, ProbeVerdict> {
    let not_mp3 =
        |what: &str, e: &dyn std::fmt::Display| ProbeVerdict::NotMp3(format!("{what}: {e}"));
    if mp3.is_empty() {
        return Err(ProbeVerdict::NotMp3("the file is empty".into()));
    }
    let mss = MediaSourceStream::new(Box::new(Cursor::new(mp3)), Default::default());
    let mut hint = Hint::new();
    hint.with_extension("mp3");
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            mss,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| not_mp3("no audio stream found", &e))?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| ProbeVerdict::NotMp3("no audio track".into()))?
        .clone();
    if track.codec_params.codec != CODEC_TYPE_MP3 {
        return Err(ProbeVerdict::NotMp3(
            "audio, but not MP3 (MPEG-1/2 Layer III)".into(),
        ));
    }
    let sample_rate = track
        .codec_params
        .sample_rate
        .ok_or_else(|| ProbeVerdict::NotMp3("no sample rate".into()))?;
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| not_mp3("no decoder", &e))?;

    let max_frames = max_seconds.saturating_mul(sample_rate as u64);
    let mut frames: u64 = 0;
    let mut decoded = 0usize;
    let mut channels = 0usize;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break
            }
            Err(e) if decoded < DECODE_CHECK_PACKETS => {
                return Err(not_mp3("unreadable frame", &e))
            }
            // Trailing junk after a valid stream: the song ends where the frames end.
            Err(_) => break,
        };
        if packet.track_id() != track.id {
            continue;
        }
        if decoded < DECODE_CHECK_PACKETS {
            let audio = decoder
                .decode(&packet)
                .map_err(|e| not_mp3("undecodable frame", &e))?;
            channels = audio.spec().channels.count();
            decoded += 1;
        }
        frames += packet.dur;
        if frames > max_frames {
            return Err(ProbeVerdict::TooLong(
                frames as f64 / sample_rate as f64,
                max_seconds,
            ));
        }
    }
    if decoded == 0 {
        return Err(ProbeVerdict::NotMp3("no MP3 frames".into()));
    }
    Ok(Mp3Info {
        seconds: frames as f64 / sample_rate as f64,
        sample_rate,
        channels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_mp3_passes_with_its_duration() {
        let info = probe(Bytes::from(stemsep_testkit::tone_mp3(440.0, 2.0, 1)), 60).unwrap();
        assert_eq!(info.sample_rate, 44_100);
        assert_eq!(info.channels, 2);
        // Within a frame or two: LAME adds encoder delay and padding, symphonia trims some.
        assert!((1.9..2.2).contains(&info.seconds), "{}", info.seconds);
    }

    #[test]
    fn junk_fails() {
        for junk in [
            b"hello world, not music".to_vec(),
            vec![0u8; 4096],
            (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ] {
            assert!(matches!(
                probe(Bytes::from(junk), 60),
                Err(ProbeVerdict::NotMp3(_))
            ));
        }
        assert!(matches!(
            probe(Bytes::new(), 60),
            Err(ProbeVerdict::NotMp3(_))
        ));
    }

    #[test]
    fn long_files_are_refused_by_frame_count() {
        let long = stemsep_testkit::silent_mp3(90.0);
        assert!(matches!(
            probe(Bytes::from(long.clone()), 60),
            Err(ProbeVerdict::TooLong(_, 60))
        ));
        let ok = probe(Bytes::from(long), 120).unwrap();
        assert!((89.5..91.0).contains(&ok.seconds), "{}", ok.seconds);
    }
}
