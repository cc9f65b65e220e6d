//! The queue worker's one error type.

use stemsep_audio::AudioError;
use stemsep_common::queue::Failure;
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
    /// The job's uploaded song is no longer in storage.
    #[error("the uploaded song is no longer in storage ({0}); submit it again")]
    InputGone(String),
    /// The job is no longer this worker's (taken back by a reaper, or replaced by a
    /// resubmission): the attempt stops.
    #[error("the job was taken over while this attempt ran")]
    Lost,
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

impl Error {
    /// Whether another attempt at the job could succeed: the song's own faults (not decodable,
    /// too long, its upload gone) cannot, everything else — storage, models, the engine's own
    /// failures — may.
    pub fn failure(&self) -> Failure {
        let permanent = match self {
            Error::Audio(e) => e.is_bad_input(),
            Error::Engine(e) => e.is_bad_input(),
            Error::InputGone(_) => true,
            _ => false,
        };
        if permanent {
            Failure::Permanent
        } else {
            Failure::Transient
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_is_permanent_the_rest_transient() {
        assert_eq!(
            Error::Audio(AudioError::Empty).failure(),
            Failure::Permanent
        );
        assert_eq!(
            Error::Engine(EngineError::Audio(AudioError::NoAudio)).failure(),
            Failure::Permanent
        );
        assert_eq!(Error::InputGone("x".into()).failure(), Failure::Permanent);
        assert_eq!(
            Error::Common(stemsep_common::Error::Storage("down".into())).failure(),
            Failure::Transient
        );
        assert_eq!(
            Error::ModelMissing {
                name: "m".into(),
                path: "p".into()
            }
            .failure(),
            Failure::Transient
        );
        assert_eq!(
            Error::Engine(EngineError::Inference("oom".into())).failure(),
            Failure::Transient
        );
    }
}
