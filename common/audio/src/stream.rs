//! The encoders a song can stream into while it is separated: MP3 for the lab's files, FLAC for
//! the lossless masters. (WAV is written whole, and a rescaled file needs its peak first, so both
//! are made afterwards with [`crate::Format::encode`].)

use crate::{AudioError, FlacWriter, Mp3Writer};

/// An encoder that takes stereo blocks as they come.
pub enum StreamWriter {
    /// MP3 (LAME).
    Mp3(Mp3Writer),
    /// FLAC (flacenc); boxed, its encoder state being large beside LAME's handle.
    Flac(Box<FlacWriter>),
}

impl StreamWriter {
    /// Encodes the next block.
    pub fn push(&mut self, left: &[f32], right: &[f32]) -> Result<(), AudioError> {
        match self {
            StreamWriter::Mp3(w) => w.push(left, right),
            StreamWriter::Flac(w) => w.push(left, right),
        }
    }

    /// The complete file.
    pub fn finish(self) -> Result<Vec<u8>, AudioError> {
        match self {
            StreamWriter::Mp3(w) => w.finish(),
            StreamWriter::Flac(w) => w.finish(),
        }
    }
}
