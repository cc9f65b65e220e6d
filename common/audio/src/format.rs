//! Stereo planar f32 → a file of one of the formats a result can take (MP3, FLAC, WAV), with the
//! clipping strategy demucs' `--clip-mode` offers, applied before any integer conversion.

use std::fmt;
use std::io::Cursor;
use std::str::FromStr;

use crate::{AudioError, FlacWriter, Mp3Writer, StreamWriter};

/// What samples of a PCM file (WAV, FLAC) hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Depth {
    /// 16-bit integers: CD quality, the smallest files.
    Int16,
    /// 24-bit integers: studio headroom.
    Int24,
    /// 32-bit floats (WAV only): keeps samples beyond full scale as they are.
    Float32,
}

impl Depth {
    /// Bits per sample: 16, 24, or 32 for float.
    pub fn bits(self) -> u16 {
        match self {
            Depth::Int16 => 16,
            Depth::Int24 => 24,
            Depth::Float32 => 32,
        }
    }

    /// The depth of `bits` bits per sample (32: float); `None` for any other count.
    pub fn from_bits(bits: u32) -> Option<Depth> {
        [Depth::Int16, Depth::Int24, Depth::Float32]
            .into_iter()
            .find(|d| u32::from(d.bits()) == bits)
    }
}

/// A file format for stems and mixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Constant-bitrate MP3 at this many kbit/s (one of [`crate::BITRATES_KBPS`]), LAME
    /// quality `preset` (2 best … 7 fastest, demucs' `--mp3-preset`).
    Mp3 {
        /// Bitrate, kbit/s.
        kbps: u32,
        /// LAME quality preset, 2..=7.
        preset: u8,
    },
    /// FLAC, 16 or 24 bit.
    Flac(Depth),
    /// WAV, 16 or 24 bit integers or 32-bit float.
    Wav(Depth),
}

impl Format {
    /// The service's and the lab's default: 320 kbit/s MP3 at LAME quality 2.
    pub const MP3_320: Format = Format::Mp3 {
        kbps: 320,
        preset: 2,
    };

    /// Checks the parameters: a bitrate LAME supports, a preset in 2..=7, no float FLAC.
    pub fn validated(self) -> Result<Format, AudioError> {
        match self {
            Format::Mp3 { kbps, .. } if !crate::BITRATES_KBPS.contains(&kbps) => {
                Err(AudioError::Bitrate(kbps))
            }
            Format::Mp3 { preset, .. } if !(2..=7).contains(&preset) => Err(AudioError::Format(
                format!("MP3 preset {preset}: use 2 (best) to 7 (fastest)"),
            )),
            Format::Flac(Depth::Float32) => Err(AudioError::Format(
                "FLAC holds integers: use 16 or 24 bit, or WAV for 32-bit float".into(),
            )),
            ok => Ok(ok),
        }
    }

    /// The canonical name [`Format`]'s `FromStr` reads back (the MP3 preset aside): `mp3:<kbps>`,
    /// `flac16`, `flac24`, `wav16`, `wav24`, `wavf32`.
    pub fn name(self) -> String {
        match self {
            Format::Mp3 { kbps, .. } => format!("mp3:{kbps}"),
            Format::Flac(d) => format!("flac{}", d.bits()),
            Format::Wav(Depth::Float32) => "wavf32".to_owned(),
            Format::Wav(d) => format!("wav{}", d.bits()),
        }
    }

    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Mp3 { .. } => "mp3",
            Format::Flac(_) => "flac",
            Format::Wav(_) => "wav",
        }
    }

    /// The MIME type served with the file.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Mp3 { .. } => "audio/mpeg",
            Format::Flac(_) => "audio/flac",
            Format::Wav(_) => "audio/wav",
        }
    }

    /// Encodes stereo `audio` (planar, −1..1 full scale) at `sample_rate` Hz after `clip`.
    pub fn encode(
        self,
        audio: &[Vec<f32>],
        sample_rate: u32,
        clip: ClipMode,
    ) -> Result<Vec<u8>, AudioError> {
        let [left, right] = audio else {
            return Err(AudioError::Encode(format!(
                "{} channels; stems are stereo",
                audio.len()
            )));
        };
        crate::same_length(left, right)?;
        let gain = clip.gain(audio);
        // Limited a chunk at a time, so a long file is never copied whole.
        let chunks = left.chunks(CHUNK).zip(right.chunks(CHUNK)).map(|(l, r)| {
            let limit =
                |c: &[f32]| -> Vec<f32> { c.iter().map(|&x| clip.limit(x * gain)).collect() };
            (limit(l), limit(r))
        });
        let mut writer = match self.validated()? {
            Format::Mp3 { kbps, preset } => {
                StreamWriter::Mp3(Mp3Writer::with_preset(sample_rate, kbps, preset)?)
            }
            Format::Flac(depth) => {
                StreamWriter::Flac(Box::new(FlacWriter::new(sample_rate, depth, 1.0)?))
            }
            Format::Wav(depth) => return wav(chunks, left.len(), sample_rate, depth),
        };
        for (l, r) in chunks {
            writer.push(&l, &r)?;
        }
        writer.finish()
    }
}

/// Samples per channel limited and encoded at a time.
const CHUNK: usize = 1 << 16;

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::Mp3 { kbps, .. } => write!(f, "MP3 {kbps} kbit/s"),
            Format::Flac(d) => write!(f, "FLAC {} bit", d.bits()),
            Format::Wav(Depth::Float32) => write!(f, "WAV 32-bit float"),
            Format::Wav(d) => write!(f, "WAV {} bit", d.bits()),
        }
    }
}

/// How samples beyond full scale are kept from wrapping around in integer formats: demucs'
/// `--clip-mode`. Stems are estimates, and a loud song's drums or a mix of stems can exceed
/// full scale by a little.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ClipMode {
    /// Scales the whole file down when its peak exceeds full scale (to 1/1.01 of it), as demucs
    /// does by default: no sample is distorted, the file is a little quieter.
    #[default]
    Rescale,
    /// Clamps each sample to ±0.99: loudness kept, peaks flattened.
    Clamp,
    /// Leaves samples as they are: float WAV keeps them; integer formats and MP3 saturate at
    /// full scale (never wrap around).
    None,
}

impl ClipMode {
    /// The factor the whole signal is multiplied by.
    fn gain(self, audio: &[Vec<f32>]) -> f32 {
        match self {
            ClipMode::Rescale => {
                let peak =
                    audio
                        .iter()
                        .flatten()
                        .fold(0.0f32, |m, &x| if x.abs() > m { x.abs() } else { m });
                1.0 / (1.01 * peak).max(1.0)
            }
            ClipMode::Clamp | ClipMode::None => 1.0,
        }
    }

    fn limit(self, x: f32) -> f32 {
        match self {
            ClipMode::Clamp => x.clamp(-0.99, 0.99),
            ClipMode::Rescale | ClipMode::None => x,
        }
    }
}

impl FromStr for ClipMode {
    type Err = AudioError;

    fn from_str(s: &str) -> Result<ClipMode, AudioError> {
        match s {
            "rescale" => Ok(ClipMode::Rescale),
            "clamp" => Ok(ClipMode::Clamp),
            "none" => Ok(ClipMode::None),
            other => Err(AudioError::Format(format!(
                "clip mode {other:?}: use rescale, clamp or none"
            ))),
        }
    }
}

impl fmt::Display for ClipMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClipMode::Rescale => "rescale",
            ClipMode::Clamp => "clamp",
            ClipMode::None => "none",
        })
    }
}

/// `x` (full scale ±1) as a signed integer of `bits` bits, saturating: a sample beyond full
/// scale becomes the extreme value, never a wrapped one.
pub(crate) fn to_int(x: f32, bits: u16) -> i32 {
    let full = (1i64 << (bits - 1)) as f64;
    // NaN (which no stem holds, but a float can) becomes silence.
    let x = if x.is_nan() { 0.0 } else { x as f64 };
    (x * full).round().clamp(-full, full - 1.0) as i32
}

fn wav(
    chunks: impl Iterator<Item = (Vec<f32>, Vec<f32>)>,
    len: usize,
    sample_rate: u32,
    depth: Depth,
) -> Result<Vec<u8>, AudioError> {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate,
        bits_per_sample: depth.bits(),
        sample_format: match depth {
            Depth::Float32 => hound::SampleFormat::Float,
            Depth::Int16 | Depth::Int24 => hound::SampleFormat::Int,
        },
    };
    let fail = |e: hound::Error| AudioError::Encode(format!("WAV: {e}"));
    let bytes_per_sample = usize::from(depth.bits() / 8);
    let mut out = Cursor::new(Vec::with_capacity(44 + len * 2 * bytes_per_sample));
    let mut writer = hound::WavWriter::new(&mut out, spec).map_err(fail)?;
    for (left, right) in chunks {
        for (&l, &r) in left.iter().zip(&right) {
            for x in [l, r] {
                match depth {
                    Depth::Float32 => writer.write_sample(x),
                    Depth::Int16 => writer.write_sample(to_int(x, 16) as i16),
                    Depth::Int24 => writer.write_sample(to_int(x, 24)),
                }
                .map_err(fail)?;
            }
        }
    }
    writer.finalize().map_err(fail)?;
    Ok(out.into_inner())
}

/// Parses demucs-style names: `mp3`, `mp3:<kbps>`, `flac`, `flac24`, `wav`, `wav24`, `wavf32`.
impl FromStr for Format {
    type Err = AudioError;

    fn from_str(s: &str) -> Result<Format, AudioError> {
        let format = match s {
            "mp3" => Format::MP3_320,
            "flac" | "flac16" => Format::Flac(Depth::Int16),
            "flac24" => Format::Flac(Depth::Int24),
            "wav" | "wav16" => Format::Wav(Depth::Int16),
            "wav24" => Format::Wav(Depth::Int24),
            "wavf32" => Format::Wav(Depth::Float32),
            other => match other.strip_prefix("mp3:").map(str::parse::<u32>) {
                Some(Ok(kbps)) => Format::Mp3 { kbps, preset: 2 },
                _ => {
                    return Err(AudioError::Format(format!(
                        "format {other:?}: use mp3, mp3:<kbit/s>, flac, flac24, wav, wav24 or \
                         wavf32"
                    )))
                }
            },
        };
        format.validated()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_saturate_instead_of_wrapping() {
        assert_eq!(to_int(1.5, 16), i16::MAX as i32);
        assert_eq!(to_int(-1.5, 16), i16::MIN as i32);
        assert_eq!(to_int(1.0, 24), (1 << 23) - 1);
        assert_eq!(to_int(0.5, 16), 16384);
        assert_eq!(to_int(f32::NAN, 16), 0);
    }

    #[test]
    fn rescale_brings_the_peak_under_full_scale() {
        let loud = vec![vec![0.5, -2.0, 1.0], vec![0.0; 3]];
        let gain = ClipMode::Rescale.gain(&loud);
        assert!((2.0 * gain - 1.0 / 1.01).abs() < 1e-6, "{gain}");
        assert_eq!(ClipMode::Rescale.gain(&[vec![0.9], vec![-0.5]]), 1.0);
        assert_eq!(ClipMode::Clamp.limit(1.3), 0.99);
    }

    #[test]
    fn names_parse_and_bad_ones_say_what_is_accepted() {
        for format in [
            Format::MP3_320,
            Format::Mp3 {
                kbps: 128,
                preset: 2,
            },
            Format::Flac(Depth::Int16),
            Format::Flac(Depth::Int24),
            Format::Wav(Depth::Int16),
            Format::Wav(Depth::Int24),
            Format::Wav(Depth::Float32),
        ] {
            assert_eq!(format.name().parse::<Format>().unwrap(), format);
        }
        assert_eq!(Depth::from_bits(32), Some(Depth::Float32));
        assert_eq!(Depth::from_bits(20), None);
        assert_eq!(
            "flac24".parse::<Format>().unwrap(),
            Format::Flac(Depth::Int24)
        );
        assert_eq!(
            "mp3:128".parse::<Format>().unwrap(),
            Format::Mp3 {
                kbps: 128,
                preset: 2
            }
        );
        assert!("mp3:100".parse::<Format>().is_err());
        let e = "ogg".parse::<Format>().unwrap_err().to_string();
        assert!(e.contains("wavf32"), "{e}");
    }
}
