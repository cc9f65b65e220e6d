//! Stereo planar f32 → MP3 (LAME), constant bitrate, with a LAME "Info" tag carrying the encoder
//! delay and padding so gapless-aware decoders (symphonia, ffmpeg, browsers) return exactly the
//! samples that went in, aligned, with no leading silence.

use mp3lame_encoder::{Bitrate, Builder, DualPcm, Encoder, FlushGap, Mode, Quality};

use crate::AudioError;

/// Bitrates the encoder accepts, in kbit/s (LAME picks MPEG-2/2.5 for the low ones at low
/// sample rates).
pub const BITRATES_KBPS: [u32; 16] = [
    8, 16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
];

/// An MP3 stream being written: push stereo blocks, then [`Mp3Writer::finish`].
pub struct Mp3Writer {
    encoder: Encoder,
    out: Vec<u8>,
}

impl Mp3Writer {
    /// A CBR stereo encoder at `sample_rate` Hz and `bitrate_kbps` kbit/s (one of
    /// [`BITRATES_KBPS`]), LAME quality 2.
    pub fn new(sample_rate: u32, bitrate_kbps: u32) -> Result<Mp3Writer, AudioError> {
        Mp3Writer::with_preset(sample_rate, bitrate_kbps, 2)
    }

    /// [`Mp3Writer::new`] at LAME quality `preset` (0 best … 9 worst; demucs offers 2..=7).
    pub fn with_preset(
        sample_rate: u32,
        bitrate_kbps: u32,
        preset: u8,
    ) -> Result<Mp3Writer, AudioError> {
        let bitrate = bitrate(bitrate_kbps)?;
        let quality = match preset {
            0 => Quality::Best,
            1 => Quality::SecondBest,
            2 => Quality::NearBest,
            3 => Quality::VeryNice,
            4 => Quality::Nice,
            5 => Quality::Good,
            6 => Quality::Decent,
            7 => Quality::Ok,
            8 => Quality::SecondWorst,
            9 => Quality::Worst,
            other => {
                return Err(AudioError::Format(format!(
                    "MP3 preset {other}: use 0 (best) to 9 (fastest)"
                )))
            }
        };
        let fail = |what: &str, e: mp3lame_encoder::BuildError| {
            AudioError::Encode(format!("{what}: {e:?}"))
        };
        let mut b = Builder::new().ok_or_else(|| AudioError::Encode("LAME init failed".into()))?;
        b.set_num_channels(2).map_err(|e| fail("channels", e))?;
        b.set_sample_rate(sample_rate)
            .map_err(|e| fail("sample rate", e))?;
        b.set_brate(bitrate).map_err(|e| fail("bitrate", e))?;
        b.set_mode(Mode::JointStereo).map_err(|e| fail("mode", e))?;
        // demucs' own MP3 writer uses -q 2 unless told otherwise.
        b.set_quality(quality).map_err(|e| fail("quality", e))?;
        b.set_to_write_vbr_tag(true)
            .map_err(|e| fail("info tag", e))?;
        let encoder = b.build().map_err(|e| fail("parameters", e))?;
        Ok(Mp3Writer {
            encoder,
            out: Vec::new(),
        })
    }

    /// Encodes one block of samples (−1..1; louder samples clip in the MP3).
    pub fn push(&mut self, left: &[f32], right: &[f32]) -> Result<(), AudioError> {
        crate::same_length(left, right)?;
        // LAME needs up to 1.25 × samples + 7200 bytes of output room per call.
        for (l, r) in left.chunks(1 << 16).zip(right.chunks(1 << 16)) {
            self.out.reserve(l.len() * 5 / 4 + 7200);
            self.encoder
                .encode_to_vec(DualPcm { left: l, right: r }, &mut self.out)
                .map_err(|e| AudioError::Encode(format!("{e:?}")))?;
        }
        Ok(())
    }

    /// Flushes the encoder and writes the final Info tag over the placeholder frame LAME emitted
    /// at the start; returns the complete file.
    pub fn finish(mut self) -> Result<Vec<u8>, AudioError> {
        self.out.reserve(7200);
        self.encoder
            .flush_to_vec::<FlushGap>(&mut self.out)
            .map_err(|e| AudioError::Encode(format!("{e:?}")))?;
        let mut tag = Vec::with_capacity(self.encoder.lame_tag_size().max(1));
        if self.encoder.lame_tag_encode_to_vec(&mut tag).is_some() && tag.len() <= self.out.len() {
            self.out[..tag.len()].copy_from_slice(&tag);
        }
        Ok(self.out)
    }
}

/// Encodes a whole stereo signal at once.
pub fn encode_mp3(
    left: &[f32],
    right: &[f32],
    sample_rate: u32,
    bitrate_kbps: u32,
) -> Result<Vec<u8>, AudioError> {
    let mut w = Mp3Writer::new(sample_rate, bitrate_kbps)?;
    w.push(left, right)?;
    w.finish()
}

fn bitrate(kbps: u32) -> Result<Bitrate, AudioError> {
    Ok(match kbps {
        8 => Bitrate::Kbps8,
        16 => Bitrate::Kbps16,
        24 => Bitrate::Kbps24,
        32 => Bitrate::Kbps32,
        40 => Bitrate::Kbps40,
        48 => Bitrate::Kbps48,
        64 => Bitrate::Kbps64,
        80 => Bitrate::Kbps80,
        96 => Bitrate::Kbps96,
        112 => Bitrate::Kbps112,
        128 => Bitrate::Kbps128,
        160 => Bitrate::Kbps160,
        192 => Bitrate::Kbps192,
        224 => Bitrate::Kbps224,
        256 => Bitrate::Kbps256,
        320 => Bitrate::Kbps320,
        other => return Err(AudioError::Bitrate(other)),
    })
}
