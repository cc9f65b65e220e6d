//! Audio at stemsep's edges, shared by the REST server (is an upload decodable audio, and how
//! long?) and the separation engine (the samples): both answers come from one reader
//! ([`probe`] and [`decode`]), so an upload the server accepts is one the worker decodes.
//!
//! Internally audio is planar `f32` ([`PlanarAudio`]); it is interleaved only inside the codecs.
#![warn(missing_docs)]

mod decode;
mod encode;
mod error;
mod flac;
mod format;
mod master;
mod mix;
mod stream;

pub use decode::{decode, decode_adding, probe, AudioInfo};
pub use encode::{encode_mp3, Mp3Writer, BITRATES_KBPS};
pub use error::AudioError;
pub use flac::FlacWriter;
pub use format::{ClipMode, Depth, Format};
pub use master::{add_master, master_writer};
pub use mix::mix;
pub use stream::StreamWriter;

/// Stereo (or any channel count) audio, planar `f32` in −1..1 at `sample_rate`.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanarAudio {
    /// Sample rate, in Hz.
    pub sample_rate: u32,
    /// One vector of samples per channel, all the same length.
    pub channels: Vec<Vec<f32>>,
}

impl PlanarAudio {
    /// Length, in samples per channel.
    pub fn len(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Duration, in seconds.
    pub fn seconds(&self) -> f64 {
        self.len() as f64 / self.sample_rate as f64
    }
}

/// Refuses stereo blocks whose channels differ in length.
pub(crate) fn same_length(left: &[f32], right: &[f32]) -> Result<(), AudioError> {
    if left.len() == right.len() {
        return Ok(());
    }
    Err(AudioError::Encode(format!(
        "channels of different lengths ({} and {} samples)",
        left.len(),
        right.len()
    )))
}
