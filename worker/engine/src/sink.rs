//! Where separated audio goes: the [`StemSink`] a song streams into, block by block in song order,
//! and the [`Progress`] it reports.

use stemsep_audio::{Mp3Writer, StreamWriter};

use crate::EngineError;

/// Where finished stem samples go, in song order. The engine pushes from a thread of its own,
/// while later segments are still being computed.
pub trait StemSink: Send {
    /// Takes the next samples of every stem: `block[s][c]` is source `s` (model order), channel
    /// `c`; all the same length, in samples. An error stops the song with that error.
    fn push(&mut self, block: &[Vec<Vec<f32>>]) -> Result<(), EngineError>;
}

/// Told how far a song is, 0..=100 percent, never going backwards; called from the engine's
/// threads.
pub trait Progress: Sync {
    /// The song is `percent` done.
    fn report(&self, percent: u8);
}

impl<F: Fn(u8) + Sync> Progress for F {
    fn report(&self, percent: u8) {
        self(percent)
    }
}

/// Collects the whole stems in memory: `stems[s][c][n]`.
#[derive(Debug, Default)]
pub struct CollectSink {
    /// The stems received so far.
    pub stems: Vec<Vec<Vec<f32>>>,
}

impl StemSink for CollectSink {
    fn push(&mut self, block: &[Vec<Vec<f32>>]) -> Result<(), EngineError> {
        if self.stems.is_empty() {
            self.stems = block.iter().map(|s| vec![Vec::new(); s.len()]).collect();
        }
        for (dst, src) in self.stems.iter_mut().zip(block) {
            for (d, s) in dst.iter_mut().zip(src) {
                d.extend_from_slice(s);
            }
        }
        Ok(())
    }
}

/// One stereo file per output, encoded as the song is separated; output `k` is the sum of the
/// model sources its mix lists (one source for a stem, several for a mix, none for silence).
pub struct EncodeSink {
    outputs: Vec<(Vec<usize>, StreamWriter)>,
}

impl EncodeSink {
    /// One output per entry: the sources it sums and the encoder it streams into.
    pub fn new(outputs: Vec<(Vec<usize>, StreamWriter)>) -> EncodeSink {
        EncodeSink { outputs }
    }

    /// MP3 encoders at `sample_rate` Hz and `bitrate_kbps` kbit/s, one per entry of `mixes`.
    pub fn mp3(
        mixes: Vec<Vec<usize>>,
        sample_rate: u32,
        bitrate_kbps: u32,
    ) -> Result<EncodeSink, EngineError> {
        let outputs = mixes
            .into_iter()
            .map(|mix| {
                let writer = Mp3Writer::new(sample_rate, bitrate_kbps)?;
                Ok((mix, StreamWriter::Mp3(writer)))
            })
            .collect::<Result<_, EngineError>>()?;
        Ok(EncodeSink { outputs })
    }

    /// One MP3 per source of a model with `sources` sources, in model order.
    pub fn per_source(
        sources: usize,
        sample_rate: u32,
        bitrate_kbps: u32,
    ) -> Result<EncodeSink, EngineError> {
        EncodeSink::mp3(
            (0..sources).map(|s| vec![s]).collect(),
            sample_rate,
            bitrate_kbps,
        )
    }

    /// Flushes every encoder: the complete files, in the order of the outputs.
    pub fn finish(self) -> Result<Vec<Vec<u8>>, EngineError> {
        self.outputs
            .into_iter()
            .map(|(_, w)| Ok(w.finish()?))
            .collect()
    }
}

impl StemSink for EncodeSink {
    /// Encodes the outputs side by side: at a song's end the last blocks would otherwise be
    /// encoded one after another on one core while the other cores, done with the model, idle.
    fn push(&mut self, block: &[Vec<Vec<f32>>]) -> Result<(), EngineError> {
        std::thread::scope(|scope| {
            let encoders: Vec<_> = self
                .outputs
                .iter_mut()
                .map(|(mix, writer)| scope.spawn(|| push_mix(writer, mix, block)))
                .collect();
            encoders.into_iter().try_for_each(|e| {
                e.join()
                    .unwrap_or_else(|_| Err(EngineError::Internal("an encoder panicked".into())))
            })
        })
    }
}

/// Encodes the sum of `block`'s sources `mix` lists (silence when it lists none).
fn push_mix(
    writer: &mut StreamWriter,
    mix: &[usize],
    block: &[Vec<Vec<f32>>],
) -> Result<(), EngineError> {
    let len = block.first().and_then(|s| s.first()).map_or(0, Vec::len);
    let source = |s: usize| {
        block.get(s).filter(|p| p.len() == 2).ok_or_else(|| {
            EngineError::Input(format!(
                "a mix names source {s}, but the block has {} stereo sources",
                block.len()
            ))
        })
    };
    let (mut left, mut right) = match mix.split_first() {
        None => (vec![0.0; len], vec![0.0; len]),
        Some((&first, _)) => {
            let first = source(first)?;
            (first[0].clone(), first[1].clone())
        }
    };
    for &s in mix.iter().skip(1) {
        let extra = source(s)?;
        left.iter_mut().zip(&extra[0]).for_each(|(a, b)| *a += b);
        right.iter_mut().zip(&extra[1]).for_each(|(a, b)| *a += b);
    }
    Ok(writer.push(&left, &right)?)
}
