//! Compressed audio (MP3, WAV, FLAC) → stereo planar f32 at the file's own sample rate.
//!
//! Bad input never panics: every failure becomes an [`EngineError`] a user can act on. Length
//! limits are checked twice, from the container's declared length before decoding and against the
//! samples actually decoded, so a file that lies in its header cannot make us allocate more than
//! the limit allows.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use symphonia::core::audio::{AudioBuffer, AudioBufferRef, Channels, Signal};
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::conv::IntoSample;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;
use symphonia::core::sample::Sample;

use super::PlanarAudio;
use crate::engine::EngineError;

/// Packets that fail to decode are skipped (as players do) unless there are more than this many
/// and more than [`MAX_BAD_FRACTION`] of all packets.
const MAX_BAD_PACKETS: usize = 8;
/// See [`MAX_BAD_PACKETS`].
const MAX_BAD_FRACTION: f64 = 0.05;
/// A stream that decodes to fewer samples than its header declares, by more than this fraction
/// (plus two MP3 frames of slack), is reported as truncated.
const TRUNCATION_TOLERANCE: f64 = 0.02;

/// Decodes `bytes` to stereo planar f32 at the stream's sample rate: mono is duplicated, more
/// than two channels are down-mixed. Fails with [`EngineError::TooLong`] past `max_duration`.
pub fn decode(bytes: &[u8], max_duration: Duration) -> Result<PlanarAudio, EngineError> {
    if bytes.is_empty() {
        return Err(EngineError::Empty);
    }
    // symphonia has arithmetic on header fields that can overflow on hostile input; a panic there
    // must be a bad-input error, not a crashed worker.
    catch_unwind(AssertUnwindSafe(|| decode_inner(bytes, max_duration))).unwrap_or_else(|_| {
        Err(EngineError::Corrupt(
            "the decoder rejected malformed data".into(),
        ))
    })
}

fn decode_inner(bytes: &[u8], max_duration: Duration) -> Result<PlanarAudio, EngineError> {
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes.to_vec())), Default::default());
    // Gapless: honour the LAME/iTunes delay and padding so stems line up with the input.
    let format_opts = FormatOptions {
        enable_gapless: true,
        ..Default::default()
    };
    let probed = symphonia::default::get_probe()
        .format(
            &Hint::new(),
            source,
            &format_opts,
            &MetadataOptions::default(),
        )
        .map_err(|e| EngineError::NotAudio(describe(&e)))?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| EngineError::NotAudio("no audio track".into()))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let sample_rate = params
        .sample_rate
        .filter(|&r| r > 0)
        .ok_or_else(|| EngineError::NotAudio("the stream has no sample rate".into()))?;
    let limit_secs = max_duration.as_secs_f64();
    let max_samples = (limit_secs * sample_rate as f64).ceil() as u64;
    let declared = params.n_frames;
    if let Some(n) = declared.filter(|&n| n > max_samples) {
        return Err(EngineError::TooLong {
            secs: n as f64 / sample_rate as f64,
            limit: limit_secs,
        });
    }
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|e| EngineError::NotAudio(describe(&e)))?;

    let capacity = declared.unwrap_or(0).min(max_samples) as usize;
    let mut out = Stereo {
        left: Vec::with_capacity(capacity),
        right: Vec::with_capacity(capacity),
    };
    let (mut packets, mut bad) = (0usize, 0usize);
    let mut last_error = String::new();
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            // The normal end of a stream, or a cut one (judged by the declared length below).
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break
            }
            Err(SymphoniaError::ResetRequired) => break,
            Err(e) => return Err(EngineError::Corrupt(describe(&e))),
        };
        if packet.track_id() != track_id {
            continue;
        }
        packets += 1;
        match decoder.decode(&packet) {
            Ok(buf) => out.append(buf),
            Err(e @ (SymphoniaError::DecodeError(_) | SymphoniaError::IoError(_))) => {
                bad += 1;
                last_error = describe(&e);
            }
            Err(e) => return Err(EngineError::Corrupt(describe(&e))),
        }
        if out.left.len() as u64 > max_samples {
            return Err(EngineError::TooLong {
                secs: out.left.len() as f64 / sample_rate as f64,
                limit: limit_secs,
            });
        }
    }
    if bad > MAX_BAD_PACKETS && bad as f64 > MAX_BAD_FRACTION * packets as f64 {
        return Err(EngineError::Corrupt(format!(
            "{bad} of {packets} packets could not be decoded (last: {last_error})"
        )));
    }
    if out.left.is_empty() {
        return Err(if bad > 0 {
            EngineError::Corrupt(last_error)
        } else {
            EngineError::NoAudio
        });
    }
    if let Some(n) = declared {
        let got = out.left.len() as f64;
        if got + 2.0 * 1152.0 < n as f64 * (1.0 - TRUNCATION_TOLERANCE) {
            return Err(EngineError::Corrupt(format!(
                "truncated: the header declares {:.1} s but only {:.1} s of audio is present",
                n as f64 / sample_rate as f64,
                got / sample_rate as f64
            )));
        }
    }
    Ok(PlanarAudio {
        sample_rate,
        channels: vec![out.left, out.right],
    })
}

fn describe(e: &SymphoniaError) -> String {
    match e {
        SymphoniaError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "unexpected end of data".into()
        }
        other => other.to_string(),
    }
}

/// The growing stereo result; each decoded buffer is mixed into it by its own channel layout
/// (MP3 may change channel mode between frames).
struct Stereo {
    left: Vec<f32>,
    right: Vec<f32>,
}

impl Stereo {
    fn append(&mut self, buf: AudioBufferRef<'_>) {
        match buf {
            AudioBufferRef::U8(b) => self.append_typed(&b),
            AudioBufferRef::U16(b) => self.append_typed(&b),
            AudioBufferRef::U24(b) => self.append_typed(&b),
            AudioBufferRef::U32(b) => self.append_typed(&b),
            AudioBufferRef::S8(b) => self.append_typed(&b),
            AudioBufferRef::S16(b) => self.append_typed(&b),
            AudioBufferRef::S24(b) => self.append_typed(&b),
            AudioBufferRef::S32(b) => self.append_typed(&b),
            AudioBufferRef::F32(b) => self.append_typed(&b),
            AudioBufferRef::F64(b) => self.append_typed(&b),
        }
    }

    fn append_typed<S: Sample + IntoSample<f32>>(&mut self, buf: &AudioBuffer<S>) {
        let frames = buf.frames();
        let weights = downmix_weights(buf.spec().channels);
        let start = self.left.len();
        self.left.resize(start + frames, 0.0);
        self.right.resize(start + frames, 0.0);
        let (left, right) = (&mut self.left[start..], &mut self.right[start..]);
        for (ch, &(wl, wr)) in weights.iter().enumerate() {
            for (i, &s) in buf.chan(ch).iter().enumerate() {
                let s: f32 = s.into_sample();
                left[i] += wl * s;
                right[i] += wr * s;
            }
        }
    }
}

/// Left/right gains for each plane of a buffer with `channels` (planes are in ascending bit
/// order of the channel mask). Mono goes to both sides; stereo passes through; for more channels,
/// front left/right at 1, centre channels at −3 dB to both sides, other left/right channels at
/// −3 dB to their side, LFE dropped, and each side scaled so its gains sum to 1 (no clipping).
fn downmix_weights(channels: Channels) -> Vec<(f32, f32)> {
    const HALF_POWER: f32 = std::f32::consts::FRAC_1_SQRT_2;
    let left = Channels::FRONT_LEFT
        | Channels::REAR_LEFT
        | Channels::FRONT_LEFT_CENTRE
        | Channels::SIDE_LEFT
        | Channels::TOP_FRONT_LEFT
        | Channels::TOP_REAR_LEFT
        | Channels::REAR_LEFT_CENTRE
        | Channels::FRONT_LEFT_WIDE
        | Channels::FRONT_LEFT_HIGH;
    let right = Channels::FRONT_RIGHT
        | Channels::REAR_RIGHT
        | Channels::FRONT_RIGHT_CENTRE
        | Channels::SIDE_RIGHT
        | Channels::TOP_FRONT_RIGHT
        | Channels::TOP_REAR_RIGHT
        | Channels::REAR_RIGHT_CENTRE
        | Channels::FRONT_RIGHT_WIDE
        | Channels::FRONT_RIGHT_HIGH;
    let lfe = Channels::LFE1 | Channels::LFE2;
    let count = channels.count();
    match count {
        0 => Vec::new(),
        1 => vec![(1.0, 1.0)],
        2 => vec![(1.0, 0.0), (0.0, 1.0)],
        _ => {
            let mut w: Vec<(f32, f32)> = channels
                .iter()
                .map(|ch| {
                    if ch == Channels::FRONT_LEFT {
                        (1.0, 0.0)
                    } else if ch == Channels::FRONT_RIGHT {
                        (0.0, 1.0)
                    } else if left.contains(ch) {
                        (HALF_POWER, 0.0)
                    } else if right.contains(ch) {
                        (0.0, HALF_POWER)
                    } else if lfe.contains(ch) {
                        (0.0, 0.0)
                    } else {
                        (HALF_POWER, HALF_POWER)
                    }
                })
                .collect();
            let (sl, sr) = w.iter().fold((0.0, 0.0), |(a, b), &(l, r)| (a + l, b + r));
            for (l, r) in &mut w {
                *l /= sl.max(f32::MIN_POSITIVE);
                *r /= sr.max(f32::MIN_POSITIVE);
            }
            w
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_one_downmix_keeps_sides_apart_and_drops_lfe() {
        let layout = Channels::FRONT_LEFT
            | Channels::FRONT_RIGHT
            | Channels::FRONT_CENTRE
            | Channels::LFE1
            | Channels::REAR_LEFT
            | Channels::REAR_RIGHT;
        let w = downmix_weights(layout);
        assert_eq!(w.len(), 6);
        assert_eq!(w[1].0, 0.0);
        assert_eq!(w[3], (0.0, 0.0));
        let left: f32 = w.iter().map(|x| x.0).sum();
        assert!((left - 1.0).abs() < 1e-6);
    }
}
