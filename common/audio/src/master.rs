//! A job's lossless masters: each stem as 24-bit FLAC, 12 dB below its real level. Every other
//! file of the job (another format, a bitrate, a `no_<stem>` mix) is made from them, so the model
//! runs once per song. The headroom keeps stems that exceed full scale (a loud song's drums can)
//! intact; 22 bits remain for the signal, about 132 dB, far below any codec's error.

use std::time::Duration;

use crate::{decode_adding, AudioError, Depth, FlacWriter};

/// Factor between a stem and its master's samples (12 dB).
const HEADROOM: f32 = 4.0;

/// Longest master read back: masters are ours, so this only guards against a damaged object.
const LONGEST: Duration = Duration::from_secs(24 * 3600);

/// A streaming writer for one stem's master at `sample_rate` Hz.
pub fn master_writer(sample_rate: u32) -> Result<FlacWriter, AudioError> {
    FlacWriter::new(sample_rate, Depth::Int24, 1.0 / HEADROOM)
}

/// Adds a master's samples, at the stem's real level, into `mix` (which grows to the stem's
/// length); returns the sample rate. A mix of several stems so holds one buffer, not one per
/// stem. On an error `mix` is left empty.
pub fn add_master(bytes: &[u8], mix: &mut [Vec<f32>; 2]) -> Result<u32, AudioError> {
    decode_adding(bytes, LONGEST, mix, HEADROOM)
}
