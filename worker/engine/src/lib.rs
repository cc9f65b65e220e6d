//! stemsep's separation engine: a Demucs model exported to ONNX (the split contract of
//! `model/README.md`), run by tract with our own kernels for the products and convolutions, and
//! the host side around it — resampling, STFT/iSTFT, segmenting and overlap-add — as demucs 4.1's
//! `api.Separator` → `apply.apply_model` does it (overlap 0.25 and no shifts unless asked).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use stemsep_engine::{EncodeSink, Separator};
//!
//! let separator = Separator::load("model/default/htdemucs.onnx".as_ref())?;
//! let audio = stemsep_audio::decode(&std::fs::read("song.mp3")?, Duration::from_secs(1200))?;
//! let info = separator.info();
//! let mut sink = EncodeSink::per_source(info.sources.len(), info.sample_rate, 320)?;
//! separator.separate(audio, &mut sink, &|percent| eprintln!("{percent} %"))?;
//! for (name, mp3) in info.sources.iter().zip(sink.finish()?) {
//!     std::fs::write(format!("{name}.mp3"), mp3)?;
//! }
//! # Ok(()) }
//! ```
//!
//! Loading plans the model once; a [`Separator`] is then shared by any number of songs and
//! threads. Memory stays flat in the song length beyond the decoded input and what the sink keeps.
#![warn(missing_docs)]

mod bag;
mod dsp;
mod error;
mod kernels;
mod memory;
mod model;
mod separate;
mod shifts;
mod sink;

use std::path::Path;
use std::time::{Duration, Instant};

pub use error::EngineError;
pub use memory::keep_freed_memory;
pub use model::NodeTime;
pub use sink::{CollectSink, EncodeSink, Progress, StemSink};
pub use stemsep_audio::PlanarAudio;
pub use stemsep_manifest::{Manifest, Weights};

use bag::Bag;
use dsp::resample::resample;
use dsp::stft::Stft;
use separate::{normalisation, Chunking, Input};

/// The facts of a model: its manifest's and its cores' (ONNX `metadata_props` or a sidecar
/// `<core>.onnx.json`; see `model/README.md` §1).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Model name, e.g. `htdemucs`.
    pub name: String,
    /// Source names in the order of the model's output axis: its stems.
    pub sources: Vec<String>,
    /// Sample rate the model works at, in Hz.
    pub sample_rate: u32,
    /// Audio channels the model takes (2).
    pub channels: usize,
    /// Segment the song is cut into, in samples per channel.
    pub segment_samples: usize,
    /// STFT size, in samples.
    pub n_fft: usize,
    /// STFT hop, in samples.
    pub hop_length: usize,
    /// Fraction of a segment consecutive segments share (0.25).
    pub overlap: f64,
    /// Members in the bag (1 for a single core).
    pub members: usize,
    /// What kind of weights the model has.
    pub weights: Weights,
}

/// How the engine uses the machine's cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Threads one segment's products and convolutions share out over (the model's pool); with
    /// several segments in flight, each gets its share of them.
    pub threads_per_segment: usize,
    /// Segments computed at the same time (each holds one segment's activations in memory).
    /// A song whose segment count this does not divide opens with the leftover ones alongside:
    /// up to `2·n - 1` for its first segments.
    pub segments_in_flight: usize,
}

impl Default for EngineConfig {
    /// All cores, over two segments side by side when a song has two: one segment across two
    /// cores leaves one idle through tract's elementwise operators, which run on one thread; two
    /// on one core each do not (`make bench` measures both).
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        EngineConfig {
            threads_per_segment: cores,
            segments_in_flight: cores.min(2),
        }
    }
}

/// How one song is separated, beyond the model: demucs' `--shifts` and `--overlap`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SeparateOptions {
    /// Passes over the song, each after a random lead of silence of up to half a second, averaged
    /// (demucs' shifts; 0 or 1: one pass, 0 with no lead). Each pass costs a whole separation,
    /// and with any the stems are held in memory until the last pass ends.
    pub shifts: usize,
    /// Seeds the random leads: the same seed gives the same samples.
    pub seed: u64,
    /// Fraction of a segment consecutive segments share, `0 ≤ overlap < 1` (the model's, 0.25,
    /// when `None`). More overlap costs more segments.
    pub overlap: Option<f64>,
}

/// Wall time of one segment's stages ([`Separator::time_segment`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentTimes {
    /// The mixture's STFT.
    pub stft: Duration,
    /// Every member's ONNX core (tract and our kernels), with its iSTFT and the weighting.
    pub cores: Duration,
}

/// A loaded, optimised model ready to separate any number of songs, from any number of threads.
pub struct Separator {
    bag: Bag,
    stft: Stft,
    config: EngineConfig,
}

impl Separator {
    /// Loads, optimises and plans the model at `model_path` once, using every core
    /// ([`EngineConfig`]'s default). The path is a model directory (its `manifest.json` names the
    /// members), a manifest file, or a single `.onnx` core.
    pub fn load(model_path: &Path) -> Result<Separator, EngineError> {
        Separator::load_with(model_path, EngineConfig::default())
    }

    /// [`Separator::load`] with an explicit use of cores.
    pub fn load_with(model_path: &Path, config: EngineConfig) -> Result<Separator, EngineError> {
        let bag = Bag::load(model_path, config.threads_per_segment.max(1))?;
        let info = bag.info();
        let stft = Stft::new(info.n_fft, info.hop_length, bag.core_samples()).map_err(|e| {
            EngineError::Model {
                path: model_path.display().to_string(),
                reason: e,
            }
        })?;
        Ok(Separator { bag, stft, config })
    }

    /// The model's facts.
    pub fn info(&self) -> &ModelInfo {
        self.bag.info()
    }

    /// The model's manifest: its members (paths resolved) and their weights.
    pub fn manifest(&self) -> &Manifest {
        self.bag.manifest()
    }

    /// Separates `audio` (the model's channel count, any sample rate: it is resampled to the
    /// model's) into the model's sources, streaming them to `sink` at the model's rate, in
    /// [`ModelInfo::sources`] order, and reporting `progress` as segments finish.
    pub fn separate(
        &self,
        audio: PlanarAudio,
        sink: &mut dyn StemSink,
        progress: &dyn Progress,
    ) -> Result<(), EngineError> {
        self.separate_with(audio, &SeparateOptions::default(), sink, progress)
    }

    /// [`Separator::separate`] with shifts or another overlap.
    pub fn separate_with(
        &self,
        audio: PlanarAudio,
        options: &SeparateOptions,
        sink: &mut dyn StemSink,
        progress: &dyn Progress,
    ) -> Result<(), EngineError> {
        let info = self.info();
        let overlap = options.overlap.unwrap_or(info.overlap);
        if !(0.0..1.0).contains(&overlap) {
            return Err(EngineError::Input(format!(
                "overlap {overlap}: it is a fraction of a segment, at least 0 and below 1"
            )));
        }
        if audio.channels.len() != info.channels {
            return Err(EngineError::Input(format!(
                "{} audio channels; the model takes {}",
                audio.channels.len(),
                info.channels
            )));
        }
        if audio.is_empty() {
            return Err(stemsep_audio::AudioError::NoAudio.into());
        }
        let mix = resample(audio.channels, audio.sample_rate, info.sample_rate)?;
        let input = Input {
            mix: &mix,
            lead: 0,
            norm: normalisation(&mix),
            overlap,
        };
        let in_flight = self.config.segments_in_flight;
        if options.shifts == 0 {
            return separate::separate(&self.bag, &self.stft, input, in_flight, sink, progress);
        }
        // demucs' max_shift: int(0.5 * samplerate).
        let max_shift = info.sample_rate as usize / 2;
        let leads = shifts::leads(options.shifts, options.seed, max_shift);
        let model = (&self.bag, &self.stft);
        shifts::separate_shifted(model, input, &leads, in_flight, sink, progress)
    }

    /// `audio` at the model's sample rate (as [`Separator::separate`] resamples it): what stems
    /// are subtracted from for a "minus" mix.
    pub fn to_model_rate(&self, audio: PlanarAudio) -> Result<PlanarAudio, EngineError> {
        let sample_rate = self.info().sample_rate;
        let channels = resample(audio.channels, audio.sample_rate, sample_rate)?;
        Ok(PlanarAudio {
            sample_rate,
            channels,
        })
    }

    /// [`Separator::separate`] into memory: `result[s][c][n]`, sources in [`ModelInfo::sources`]
    /// order, at the model's sample rate.
    pub fn separate_planar(
        &self,
        audio: PlanarAudio,
        progress: &dyn Progress,
    ) -> Result<Vec<Vec<Vec<f32>>>, EngineError> {
        let mut sink = CollectSink::default();
        self.separate(audio, &mut sink, progress)?;
        Ok(sink.stems)
    }

    /// Segments a song of `samples` samples per channel (at the model's rate) is cut into.
    pub fn segments(&self, samples: usize) -> usize {
        let info = self.info();
        Chunking::new(samples, info.segment_samples, info.overlap).count()
    }

    /// Runs the first segment of `audio` (at the model's rate; zero-padded if shorter) through
    /// STFT → every member's core → iSTFT and weighting on the model's pool, timing the STFT and
    /// the rest. For benchmarks.
    pub fn time_segment(&self, audio: &PlanarAudio) -> Result<SegmentTimes, EngineError> {
        let (mix, channels) = self.first_segment(audio)?;
        let mut scratch = self.stft.scratch();
        let started = Instant::now();
        let mut spec = vec![0.0f32; self.stft.spec_len(channels)];
        self.stft
            .forward_into(&mix, channels, &mut spec, &mut scratch);
        let stft = started.elapsed();
        let started = Instant::now();
        let t = self.bag.core_samples();
        let pool = self.bag.pool();
        self.bag
            .run(pool, &self.stft, mix, spec, &mut scratch, 0, t)?;
        Ok(SegmentTimes {
            stft,
            cores: started.elapsed(),
        })
    }

    /// Runs the first segment of `audio` like [`Separator::time_segment`], timing every node of
    /// the optimised plan instead (the wrapper adds a few µs per node). For `make bench-profile`.
    pub fn profile_segment(&self, audio: &PlanarAudio) -> Result<Vec<NodeTime>, EngineError> {
        let (mix, channels) = self.first_segment(audio)?;
        let spec = self.stft.forward(&mix, channels);
        self.bag.profile(&mix, &spec)
    }

    /// The first segment of `audio`, planar `[C][T]`, and its channel count.
    fn first_segment(&self, audio: &PlanarAudio) -> Result<(Vec<f32>, usize), EngineError> {
        let info = self.info();
        if audio.channels.len() != info.channels || audio.sample_rate != info.sample_rate {
            return Err(EngineError::Input(format!(
                "a benchmark segment must be {} channels at {} Hz",
                info.channels, info.sample_rate
            )));
        }
        let t = self.bag.core_samples();
        let mut mix = vec![0.0f32; info.channels * t];
        for (plane, channel) in mix.chunks_exact_mut(t).zip(&audio.channels) {
            let n = channel.len().min(t);
            plane[..n].copy_from_slice(&channel[..n]);
        }
        Ok((mix, info.channels))
    }
}
