//! FLAC written as the samples arrive: a frame is encoded to bytes whenever a block of samples
//! is full, so a long stem is held only as compressed bytes, never whole as PCM.

use flacenc::component::{BitRepr, Stream};
use flacenc::config;
use flacenc::error::{Verified, Verify};
use flacenc::source::{Context, Fill, FrameBuf};

use crate::format::to_int;
use crate::{AudioError, Depth};

/// A stereo FLAC stream being written: push blocks, then [`FlacWriter::finish`].
pub struct FlacWriter {
    config: Verified<config::Encoder>,
    /// STREAMINFO and the other metadata; its frames are kept as bytes in `frames` instead.
    stream: Stream,
    frames: Vec<u8>,
    frame: (FrameBuf, Context),
    /// Interleaved samples not yet a whole block.
    pending: Vec<i32>,
    bits: u16,
    gain: f32,
}

impl FlacWriter {
    /// A 16- or 24-bit stereo stream at `sample_rate` Hz; each sample is multiplied by `gain`
    /// before it becomes an integer (which saturates at full scale, never wraps).
    pub fn new(sample_rate: u32, depth: Depth, gain: f32) -> Result<FlacWriter, AudioError> {
        if depth == Depth::Float32 {
            return Err(AudioError::Format(
                "FLAC holds integers: use 16 or 24 bit, or WAV for 32-bit float".into(),
            ));
        }
        let bits = depth.bits();
        let config = config::Encoder::default()
            .into_verified()
            .map_err(|(_, e)| fail(&e))?;
        let stream =
            Stream::new(sample_rate as usize, 2, usize::from(bits)).map_err(|e| fail(&e))?;
        let frame = (
            FrameBuf::with_size(2, config.block_size).map_err(|e| fail(&e))?,
            Context::new(usize::from(bits), 2),
        );
        Ok(FlacWriter {
            config,
            stream,
            frames: Vec::new(),
            frame,
            pending: Vec::new(),
            bits,
            gain,
        })
    }

    /// Adds one block of samples; encodes every block of the configured size it completes.
    pub fn push(&mut self, left: &[f32], right: &[f32]) -> Result<(), AudioError> {
        crate::same_length(left, right)?;
        let (bits, gain) = (self.bits, self.gain);
        self.pending.extend(
            left.iter()
                .zip(right)
                .flat_map(|(&l, &r)| [to_int(l * gain, bits), to_int(r * gain, bits)]),
        );
        let whole = 2 * self.config.block_size;
        let full = self.pending.len() / whole * whole;
        let pending = std::mem::take(&mut self.pending);
        for block in pending[..full].chunks(whole) {
            self.encode(block)?;
        }
        self.pending = pending;
        self.pending.drain(..full);
        Ok(())
    }

    /// Encodes the last, shorter block and returns the complete file.
    pub fn finish(mut self) -> Result<Vec<u8>, AudioError> {
        if !self.pending.is_empty() {
            let last = std::mem::take(&mut self.pending);
            self.encode(&last)?;
        }
        let context = &self.frame.1;
        let info = self.stream.stream_info_mut();
        info.set_md5_digest(&context.md5_digest());
        info.set_total_samples(context.total_samples());
        // A fixed block size: STREAMINFO's minimum equals the maximum even though the last block
        // is shorter (libFLAC does the same; symphonia reads a smaller minimum as a
        // variable-block-size stream, which it then cannot decode).
        info.set_block_sizes(self.config.block_size, self.config.block_size)
            .map_err(|e| fail(&e))?;
        let mut sink = flacenc::bitsink::ByteSink::new();
        self.stream.write(&mut sink).map_err(|e| fail(&e))?;
        let mut file = sink.into_inner();
        file.extend_from_slice(&self.frames);
        Ok(file)
    }

    fn encode(&mut self, interleaved: &[i32]) -> Result<(), AudioError> {
        self.frame
            .fill_interleaved(interleaved)
            .map_err(|e| fail(&e))?;
        let number = self
            .frame
            .1
            .current_frame_number()
            .ok_or_else(|| AudioError::Encode("FLAC: no frame was filled".into()))?;
        let frame = flacenc::encode_fixed_size_frame(
            &self.config,
            &self.frame.0,
            number,
            self.stream.stream_info(),
        )
        .map_err(|e| fail(&e))?;
        self.stream.stream_info_mut().update_frame_info(&frame);
        let mut sink = flacenc::bitsink::ByteSink::with_capacity(frame.count_bits());
        frame.write(&mut sink).map_err(|e| fail(&e))?;
        self.frames.extend_from_slice(&sink.into_inner());
        Ok(())
    }
}

/// An error of flacenc's, as the encoder error it is for us.
fn fail(e: &dyn std::fmt::Display) -> AudioError {
    AudioError::Encode(format!("FLAC: {e}"))
}
