//! The engine's one error type.

use stemsep_audio::AudioError;

/// Everything that can go wrong loading a model or separating a song.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model file could not be read or is not a usable split Demucs export.
    #[error("model {path}: {reason}")]
    Model {
        /// Path of the ONNX file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The audio handed to the engine does not fit the model (channel count, no samples).
    #[error("the audio cannot be separated: {0}")]
    Input(String),
    /// Reading or writing audio failed: a sink's encoder, or resampling.
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// Running the model failed (a bug or a model/engine mismatch, not the user's input).
    #[error("model inference failed: {0}")]
    Inference(String),
    /// One of the engine's own threads failed (a bug, not the user's input).
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// True when the error is the input's fault (retrying the same audio cannot succeed).
    pub fn is_bad_input(&self) -> bool {
        match self {
            EngineError::Input(_) => true,
            EngineError::Audio(e) => e.is_bad_input(),
            EngineError::Model { .. } | EngineError::Inference(_) | EngineError::Internal(_) => {
                false
            }
        }
    }
}
