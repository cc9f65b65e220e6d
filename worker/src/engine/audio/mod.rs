//! Audio at the engine's edges: compressed bytes in, compressed bytes out.

pub mod decode;
pub mod encode;

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
