//! The one reader of compressed audio (MP3, WAV, FLAC, Ogg Vorbis, AAC in MP4/M4A or ADTS): [`probe`] answers "is this decodable audio,
//! and how long?" for the REST server, [`decode`] gives the samples to the engine, and both run the
//! same code over the same packets, so they cannot disagree on what is audio, what is too long or
//! what is truncated.
//!
//! Bad input never panics: every failure becomes an [`AudioError`] a user can act on. Length
//! limits are checked twice, from the container's declared length before reading and against the
//! frames actually read, so a file that lies in its header cannot make us allocate more than the
//! limit allows.

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

use crate::{AudioError, PlanarAudio};

/// Packets that fail to decode are skipped (as players do) unless there are more than this many
/// and more than [`MAX_BAD_FRACTION`] of all packets decoded.
const MAX_BAD_PACKETS: usize = 8;
/// See [`MAX_BAD_PACKETS`].
const MAX_BAD_FRACTION: f64 = 0.05;
/// A stream that holds fewer frames than its header declares, by more than this fraction (plus
/// two MP3 frames of slack), is reported as truncated.
const TRUNCATION_TOLERANCE: f64 = 0.02;
/// Past this many good packets, a container error ends the stream (trailing junk, as players
/// treat it) rather than failing it.
const TRAILING_JUNK_AFTER: usize = 8;

/// Frames per input byte reserved at most before decoding: more than compressed music holds
/// (MP3 at 8 kbit/s and 8 kHz holds 8).
const FRAMES_PER_BYTE: u64 = 16;

/// Largest magnitude a float sample may have (full scale is 1): far beyond any real recording,
/// and far below where mixing channels down or de-normalising stems could overflow f32.
const MAX_FLOAT_SAMPLE: f32 = 1e6;

/// What [`probe`] learned about a decodable file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioInfo {
    /// Duration, in seconds (from the packets' frame counts).
    pub seconds: f64,
    /// Sample rate, in Hz.
    pub sample_rate: u32,
    /// Channel count of the stream (the first decoded packet's).
    pub channels: usize,
}

/// Checks that `bytes` hold audio [`decode`] accepts, no longer than `max_duration`: it decodes
/// every packet as [`decode`] does but keeps no samples, so its memory stays that of one packet.
/// CPU-bound: call it off an async event loop.
pub fn probe(bytes: &[u8], max_duration: Duration) -> Result<AudioInfo, AudioError> {
    read(bytes, max_duration, Mode::Probe, Stereo::default()).map(|read| read.info)
}

/// Decodes `bytes` to stereo planar f32 at the stream's sample rate: mono is duplicated, more
/// than two channels are down-mixed. Fails with [`AudioError::TooLong`] past `max_duration`.
pub fn decode(bytes: &[u8], max_duration: Duration) -> Result<PlanarAudio, AudioError> {
    let read = read(bytes, max_duration, Mode::Decode, Stereo::default())?;
    let Stereo { left, right, .. } = read.samples;
    Ok(PlanarAudio {
        sample_rate: read.info.sample_rate,
        channels: vec![left, right],
    })
}

/// Decodes `bytes` as [`decode`] does, adding `gain` × its samples into `mix` (stereo, any
/// length: it grows to the decoded length) instead of returning them, so a sum of several files
/// never holds more than one packet of each; returns the sample rate.
pub fn decode_adding(
    bytes: &[u8],
    max_duration: Duration,
    mix: &mut [Vec<f32>; 2],
    gain: f32,
) -> Result<u32, AudioError> {
    let [left, right] = mix;
    let into = Stereo {
        left: std::mem::take(left),
        right: std::mem::take(right),
        at: 0,
        gain,
    };
    let read = read(bytes, max_duration, Mode::Add, into);
    let rate = read.map(|read| {
        *left = read.samples.left;
        *right = read.samples.right;
        read.info.sample_rate
    })?;
    Ok(rate)
}

/// Whether [`read`] keeps the samples it decodes.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Decode and count, keep nothing.
    Probe,
    /// Decode, count and keep.
    Decode,
    /// Decode, count and add into the samples given.
    Add,
}

/// What one pass over a file gives.
struct Read {
    info: AudioInfo,
    samples: Stereo,
}

/// The one pass [`probe`] and [`decode`] share.
fn read(
    bytes: &[u8],
    max_duration: Duration,
    mode: Mode,
    into: Stereo,
) -> Result<Read, AudioError> {
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    // symphonia has arithmetic on header fields that can overflow on hostile input; a panic there
    // must be a bad-input error, not a crashed server or worker.
    catch_unwind(AssertUnwindSafe(|| {
        read_inner(bytes, max_duration, mode, into)
    }))
    .unwrap_or_else(|_| {
        Err(AudioError::Corrupt(
            "the decoder rejected malformed data".into(),
        ))
    })
}

fn read_inner(
    bytes: &[u8],
    max_duration: Duration,
    mode: Mode,
    mut samples: Stereo,
) -> Result<Read, AudioError> {
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
        .map_err(|e| AudioError::NotAudio(describe(&e)))?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| AudioError::NotAudio("no audio track".into()))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let sample_rate = params
        .sample_rate
        .filter(|&r| r > 0)
        .ok_or_else(|| AudioError::NotAudio("the stream has no sample rate".into()))?;
    let limit_secs = max_duration.as_secs_f64();
    let max_frames = (limit_secs * sample_rate as f64).ceil() as u64;
    let too_long = |frames: u64| AudioError::TooLong {
        secs: frames as f64 / sample_rate as f64,
        limit: limit_secs,
    };
    let declared = params.n_frames;
    if let Some(n) = declared.filter(|&n| n > max_frames) {
        return Err(too_long(n));
    }
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|e| AudioError::NotAudio(describe(&e)))?;

    // Reserve for the declared length, but no more than the bytes could plausibly hold: a header
    // may declare billions of frames at an absurd sample rate, and reserving that would abort the
    // process. A file that really is longer just grows the buffers.
    if mode == Mode::Decode {
        let capacity = declared
            .unwrap_or(0)
            .min(max_frames)
            .min(bytes.len() as u64 * FRAMES_PER_BYTE) as usize;
        samples.left.reserve(capacity);
        samples.right.reserve(capacity);
    }
    let mut frames: u64 = 0;
    let (mut decoded, mut bad, mut good) = (0usize, 0usize, 0usize);
    let mut channels = 0usize;
    let mut last_error = String::new();
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            // The normal end of a stream, or a cut one (judged by the declared length below).
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break
            }
            Err(SymphoniaError::ResetRequired) => break,
            Err(_) if good >= TRAILING_JUNK_AFTER => break,
            Err(e) => return Err(AudioError::Corrupt(describe(&e))),
        };
        if packet.track_id() != track_id {
            continue;
        }
        decoded += 1;
        match decoder.decode(&packet) {
            Ok(buf) => {
                // Float PCM can hold NaN, infinities and values that overflow once mixed down:
                // they would turn the whole song to NaN in the engine's normalisation and reach
                // LAME's quantiser, whose table indices they corrupt. Found by the `decode` fuzzer.
                if !plausible(&buf) {
                    return Err(AudioError::Corrupt(format!(
                        "the samples include NaN, infinite or absurd values (beyond ±{MAX_FLOAT_SAMPLE:e}; full scale is ±1)"
                    )));
                }
                good += 1;
                channels = buf.spec().channels.count();
                frames += buf.frames() as u64;
                if mode != Mode::Probe {
                    samples.append(buf);
                }
            }
            Err(e @ (SymphoniaError::DecodeError(_) | SymphoniaError::IoError(_))) => {
                bad += 1;
                last_error = describe(&e);
            }
            Err(e) => return Err(AudioError::Corrupt(describe(&e))),
        }
        if frames > max_frames {
            return Err(too_long(frames));
        }
    }
    if bad > MAX_BAD_PACKETS && bad as f64 > MAX_BAD_FRACTION * decoded as f64 {
        return Err(AudioError::Corrupt(format!(
            "{bad} of {decoded} packets could not be decoded (last: {last_error})"
        )));
    }
    if good == 0 || frames == 0 {
        return Err(if bad > 0 {
            AudioError::Corrupt(last_error)
        } else {
            AudioError::NoAudio
        });
    }
    if let Some(n) = declared {
        if frames as f64 + 2.0 * 1152.0 < n as f64 * (1.0 - TRUNCATION_TOLERANCE) {
            return Err(AudioError::Corrupt(format!(
                "truncated: the header declares {:.1} s but only {:.1} s of audio is present",
                n as f64 / sample_rate as f64,
                frames as f64 / sample_rate as f64
            )));
        }
    }
    Ok(Read {
        info: AudioInfo {
            seconds: frames as f64 / sample_rate as f64,
            sample_rate,
            channels,
        },
        samples,
    })
}

/// Whether every sample of `buf` is within ±[`MAX_FLOAT_SAMPLE`] (NaN is not; integer PCM
/// always is).
fn plausible(buf: &AudioBufferRef<'_>) -> bool {
    fn planes<S: Sample>(b: &AudioBuffer<S>, ok: impl Fn(&S) -> bool) -> bool {
        (0..b.spec().channels.count()).all(|ch| b.chan(ch).iter().all(&ok))
    }
    match buf {
        AudioBufferRef::F32(b) => planes(b, |s| s.abs() <= MAX_FLOAT_SAMPLE),
        AudioBufferRef::F64(b) => planes(b, |s| s.abs() <= MAX_FLOAT_SAMPLE as f64),
        _ => true,
    }
}

fn describe(e: &SymphoniaError) -> String {
    match e {
        SymphoniaError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "unexpected end of data".into()
        }
        other => other.to_string(),
    }
}

/// The stereo result; each decoded buffer is added into it at `at`, times `gain`, by its own
/// channel layout (MP3 may change channel mode between frames), growing it as needed.
struct Stereo {
    left: Vec<f32>,
    right: Vec<f32>,
    /// Where the next buffer goes.
    at: usize,
    gain: f32,
}

impl Default for Stereo {
    fn default() -> Self {
        Stereo {
            left: Vec::new(),
            right: Vec::new(),
            at: 0,
            gain: 1.0,
        }
    }
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
        let (start, end) = (self.at, self.at + frames);
        for side in [&mut self.left, &mut self.right] {
            if side.len() < end {
                side.resize(end, 0.0);
            }
        }
        self.at = end;
        let (left, right) = (&mut self.left[start..end], &mut self.right[start..end]);
        let gain = self.gain;
        for (ch, &(wl, wr)) in weights.iter().enumerate() {
            let (wl, wr) = (wl * gain, wr * gain);
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
