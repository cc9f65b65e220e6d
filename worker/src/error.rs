//! The queue worker's error type (the engine's own failures are [`EngineError`]).

use stemsep_common::job::Track;

use crate::EngineError;

/// What can stop a job attempt or the worker itself.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Separation failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Redis or storage failed.
    #[error(transparent)]
    Common(#[from] stemsep_common::Error),
    /// The job names a model this worker does not have.
    #[error("model {name:?} is not installed on this worker ({path} is missing)")]
    ModelMissing {
        /// The model name from the job.
        name: String,
        /// Where the ONNX file was looked for.
        path: String,
    },
    /// The engine returned fewer stems than the API promises.
    #[error("the engine produced no {0} stem")]
    MissingStem(Track),
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
