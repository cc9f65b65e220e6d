//! The separation engine: MP3 bytes in, one MP3 per stem out.
//!
//! Pipeline (mirrors demucs 4.1 `api.Separator` → `apply.apply_model`, shifts 0, overlap 0.25):
//! decode (symphonia) → resample to the model's rate (rubato) → normalise by the mono mix's
//! mean/std → segments of the model's length at a 0.75-segment stride → per segment: STFT (realfft)
//! → ONNX core (tract) → iSTFT + time branch → triangular-weighted overlap-add → de-normalise →
//! encode each stem (LAME).

use std::path::Path;
use std::time::Duration;

use stemsep_common::job::Track;

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

/// The facts a model carries about itself (ONNX `metadata_props` or a sidecar `<model>.onnx.json`).
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
        SeparateOptions { bitrate_kbps: 320, max_duration: Duration::from_secs(20 * 60) }
    }
}

/// A loaded, optimised model ready to separate any number of songs, from any number of threads.
pub struct Separator {
    info: ModelInfo,
}

impl Separator {
    /// Loads, optimises and plans the ONNX model once.
    pub fn load(model_path: &Path) -> Result<Separator, EngineError> {
        Err(EngineError::Model {
            path: model_path.display().to_string(),
            reason: "engine not implemented yet".into(),
        })
    }

    /// The model's facts.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Separates an MP3 (or WAV/FLAC) file into one encoded MP3 per [`Track`], calling `progress`
    /// with 0..=100 after each segment.
    pub fn separate_mp3(
        &self,
        input: &[u8],
        opts: &SeparateOptions,
        progress: &(dyn Fn(u8) + Sync),
    ) -> Result<Vec<(Track, Vec<u8>)>, EngineError> {
        let _ = (input, opts, progress);
        Err(EngineError::Inference("engine not implemented yet".into()))
    }
}
