//! The queue worker's one error type.

use stemsep_audio::AudioError;
use stemsep_engine::EngineError;

/// What can stop a job attempt or the worker itself.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The song could not be decoded or the stems encoded.
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// Separation failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Redis or storage failed.
    #[error(transparent)]
    Common(#[from] stemsep_common::Error),
    /// The job names a model this worker does not have.
    #[error("model {name:?} is not installed on this worker (not in {path})")]
    ModelMissing {
        /// The model name from the job.
        name: String,
        /// The model directory it was looked for in.
        path: String,
    },

    /// The separation task panicked or was cancelled.
    #[error("separation task ended abnormally: {0}")]
    Task(String),
    /// A setting is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// Registering or exporting metrics failed.
    #[error("metrics: {0}")]
    Metrics(String),
}
