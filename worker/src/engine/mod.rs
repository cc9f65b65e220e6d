//! The separation engine: MP3 bytes in, one MP3 per stem out.
//!
//! Pipeline (mirrors demucs 4.1 `api.Separator` → `apply.apply_model`, shifts 0, overlap 0.25):
//! decode (symphonia) → resample to the model's rate (rubato) → normalise by the mono mix's
//! mean/std → segments of the model's length at a 0.75-segment stride → per segment: STFT (realfft)
//! → ONNX core (tract) → iSTFT + time branch → triangular-weighted overlap-add → de-normalise →
//! encode each stem (LAME).

pub mod audio;
mod conv;
mod deconv;
pub mod dsp;
mod matmul;
pub mod memory;
pub mod model;
pub mod separate;
mod spatial;
#[cfg(test)]
mod test_tensors;

use std::path::Path;
use std::time::Duration;

use stemsep_common::job::Track;

use audio::decode::decode;
use audio::encode::Mp3Writer;
use audio::PlanarAudio;
use dsp::resample::resample;
use dsp::stft::Stft;
use model::Model;
use separate::{CollectSink, StemSink};

/// Everything that can go wrong while separating a song.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The input has no bytes at all.
    #[error("the input is empty: send an MP3, WAV or FLAC file")]
    Empty,
    /// The bytes are not a recognised audio container/codec.
    #[error("the input is not a supported audio file (MP3, WAV or FLAC): {0}")]
    NotAudio(String),
    /// The file starts as audio but its data is damaged or cut short.
    #[error("the audio data is corrupt or truncated: {0}")]
    Corrupt(String),
    /// The file decodes to no samples.
    #[error("the audio file contains no samples")]
    NoAudio,
    /// The song is longer than the configured limit.
    #[error("the song is {secs:.0} s long, more than the limit of {limit:.0} s: cut it shorter")]
    TooLong {
        /// Length of the song (at least this long), in seconds.
        secs: f64,
        /// The configured limit, in seconds.
        limit: f64,
    },
    /// The model file could not be read or is not a usable split HT-Demucs export.
    #[error("model {path}: {reason}")]
    Model {
        /// Path of the ONNX file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Running the model failed (a bug or a model/engine mismatch, not the user's input).
    #[error("model inference failed: {0}")]
    Inference(String),
    /// The requested MP3 bitrate is not one LAME supports.
    #[error("unsupported MP3 bitrate {0} kbit/s; use one of 8, 16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256 or 320")]
    Bitrate(u32),
    /// Encoding a stem to MP3 failed.
    #[error("MP3 encoding failed: {0}")]
    Encode(String),
}

impl EngineError {
    /// True when the error is the input's fault (retrying the same bytes cannot succeed).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            EngineError::Empty
                | EngineError::NotAudio(_)
                | EngineError::Corrupt(_)
                | EngineError::NoAudio
                | EngineError::TooLong { .. }
        )
    }
}

/// The facts a model carries about itself (ONNX `metadata_props` or a sidecar `<model>.onnx.json`;
/// see `model/README.md` §1).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Model name, e.g. `htdemucs`.
    pub name: String,
    /// Source names in the order of the model's output axis.
    pub sources: Vec<String>,
    /// Sample rate the model works at, in Hz.
    pub sample_rate: u32,
    /// Audio channels the model takes (2).
    pub channels: usize,
    /// Segment length the model takes, in samples per channel.
    pub segment_samples: usize,
    /// STFT size, in samples.
    pub n_fft: usize,
    /// STFT hop, in samples.
    pub hop_length: usize,
    /// Fraction of a segment consecutive segments share (0.25).
    pub overlap: f64,
}

/// Per-call options.
#[derive(Debug, Clone)]
pub struct SeparateOptions {
    /// MP3 bitrate of the stems, in kbit/s (default 320).
    pub bitrate_kbps: u32,
    /// Longest song accepted (default 20 minutes).
    pub max_duration: Duration,
}

impl Default for SeparateOptions {
    fn default() -> Self {
        SeparateOptions {
            bitrate_kbps: 320,
            max_duration: Duration::from_secs(20 * 60),
        }
    }
}

/// How the engine uses the machine's cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Threads one segment's products and convolutions share out over (the model's pool); with
    /// several segments in flight, each gets its share of them.
    pub threads_per_segment: usize,
    /// Segments computed at the same time (each holds one segment's activations in memory:
    /// ~0.4 GB for full-size htdemucs). A song whose segment count this does not divide opens
    /// with the leftover ones alongside: up to `2·n - 1` for its first segments.
    pub segments_in_flight: usize,
}

impl Default for EngineConfig {
    /// All cores, over two segments side by side when a song has two. One segment across two
    /// cores leaves one idle through tract's elementwise operators, which run on one thread; two
    /// on one core each do not (1-min song RTF 0.52 -> 0.49 on 2 cores, same `make bench` day).
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        EngineConfig {
            threads_per_segment: cores,
            segments_in_flight: cores.min(2),
        }
    }
}

/// A loaded, optimised model ready to separate any number of songs, from any number of threads.
pub struct Separator {
    model: Model,
    stft: Stft,
    config: EngineConfig,
    /// For each model source, the track it is written to (sources with other names go to
    /// [`Track::Other`]).
    tracks: Vec<Track>,
}

impl Separator {
    /// Loads, optimises and plans the ONNX model once, using every core ([`EngineConfig`]'s
    /// default).
    pub fn load(model_path: &Path) -> Result<Separator, EngineError> {
        Separator::load_with(model_path, EngineConfig::default())
    }

    /// [`Separator::load`] with an explicit use of cores.
    pub fn load_with(model_path: &Path, config: EngineConfig) -> Result<Separator, EngineError> {
        let model = Model::load(model_path, config.threads_per_segment.max(1))?;
        let info = model.info();
        let err = |reason: String| EngineError::Model {
            path: model_path.display().to_string(),
            reason,
        };
        let stft = Stft::new(info.n_fft, info.hop_length, info.segment_samples)
            .map_err(|e| err(e.to_string()))?;
        let tracks: Vec<Track> = info
            .sources
            .iter()
            .map(|name| name.parse().unwrap_or(Track::Other))
            .collect();
        for track in [Track::Drums, Track::Bass, Track::Vocals] {
            if !tracks.contains(&track) {
                return Err(err(format!(
                    "the model has no {track} source (sources: {})",
                    info.sources.join(",")
                )));
            }
        }
        Ok(Separator {
            model,
            stft,
            config,
            tracks,
        })
    }

    /// The model's facts.
    pub fn info(&self) -> &ModelInfo {
        self.model.info()
    }

    /// Separates an MP3 (or WAV/FLAC) file into one encoded MP3 per [`Track`] (in
    /// [`Track::ALL`] order), calling `progress` with 0..=100 as segments finish.
    pub fn separate_mp3(
        &self,
        input: &[u8],
        opts: &SeparateOptions,
        progress: &(dyn Fn(u8) + Sync),
    ) -> Result<Vec<(Track, Vec<u8>)>, EngineError> {
        let audio = decode(input, opts.max_duration)?;
        let sample_rate = self.info().sample_rate;
        let mut sink = Mp3Sink {
            writers: Track::ALL
                .iter()
                .map(|&t| Ok((t, Mp3Writer::new(sample_rate, opts.bitrate_kbps)?)))
                .collect::<Result<_, EngineError>>()?,
            tracks: &self.tracks,
        };
        self.separate_into(audio, &mut sink, progress)?;
        sink.writers
            .into_iter()
            .map(|(t, w)| Ok((t, w.finish()?)))
            .collect()
    }

    /// Separates stereo audio (any sample rate; resampled to the model's) into the model's sources
    /// without any MP3 step: `result[s][c][n]`, sources in [`ModelInfo::sources`] order, at the
    /// model's sample rate.
    pub fn separate_planar(
        &self,
        audio: PlanarAudio,
        progress: &(dyn Fn(u8) + Sync),
    ) -> Result<Vec<Vec<Vec<f32>>>, EngineError> {
        if audio.channels.len() != self.info().channels || audio.is_empty() {
            return Err(EngineError::NoAudio);
        }
        let mut sink = CollectSink { stems: Vec::new() };
        self.separate_into(audio, &mut sink, progress)?;
        Ok(sink.stems)
    }

    /// Resamples `audio` to the model's rate and runs apply_model into `sink`; the resampled mix
    /// is dropped before returning, so only the sink's output outlives the call.
    fn separate_into(
        &self,
        audio: PlanarAudio,
        sink: &mut dyn StemSink,
        progress: &(dyn Fn(u8) + Sync),
    ) -> Result<(), EngineError> {
        let mix = resample(audio.channels, audio.sample_rate, self.info().sample_rate)?;
        separate::separate(
            &self.model,
            &self.stft,
            &mix,
            self.config.segments_in_flight,
            sink,
            progress,
        )
    }
}

/// Streams finished samples into one MP3 encoder per track, summing sources that share a track.
struct Mp3Sink<'a> {
    writers: Vec<(Track, Mp3Writer)>,
    tracks: &'a [Track],
}

impl StemSink for Mp3Sink<'_> {
    /// Encodes the tracks side by side: at a song's end the last blocks would otherwise be encoded
    /// one track after another on one core while the other cores, done with the model, idle.
    fn push(&mut self, block: &[Vec<Vec<f32>>]) -> Result<(), EngineError> {
        let tracks = self.tracks;
        std::thread::scope(|scope| {
            let encoders: Vec<_> = self
                .writers
                .iter_mut()
                .map(|(track, writer)| scope.spawn(|| push_track(writer, *track, block, tracks)))
                .collect();
            encoders.into_iter().try_for_each(|e| {
                e.join().unwrap_or_else(|_| {
                    Err(EngineError::Encode(
                        "internal error in the MP3 encoder".into(),
                    ))
                })
            })
        })
    }
}

/// Encodes the sum of `block`'s sources that go to `track` (silence when none does: a model
/// without an "other" source still yields an other.mp3).
fn push_track(
    writer: &mut Mp3Writer,
    track: Track,
    block: &[Vec<Vec<f32>>],
    tracks: &[Track],
) -> Result<(), EngineError> {
    let mut mine = block
        .iter()
        .zip(tracks)
        .filter(|(_, t)| **t == track)
        .map(|(b, _)| b);
    let Some(first) = mine.next() else {
        let silence = vec![0.0; block[0][0].len()];
        return writer.push(&silence, &silence);
    };
    let (mut left, mut right) = (first[0].clone(), first[1].clone());
    for extra in mine {
        left.iter_mut().zip(&extra[0]).for_each(|(a, b)| *a += b);
        right.iter_mut().zip(&extra[1]).for_each(|(a, b)| *a += b);
    }
    writer.push(&left, &right)
}
