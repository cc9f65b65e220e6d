//! The one error type of the shared crate.

/// Errors from the queue and storage layers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis could not be reached or answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The object does not exist in storage.
    #[error("object {0} not found")]
    NotFound(String),
    /// Storage failed for another reason (I/O, network, emulator).
    #[error("storage: {0}")]
    Storage(String),
    /// A name (hash, track, model) does not have the expected form.
    #[error("invalid {what}: {value:?}")]
    Invalid {
        /// What kind of name was rejected.
        what: &'static str,
        /// The rejected value.
        value: String,
    },
    /// A stored record could not be (de)serialised.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// A job's file could not be made (a master that does not decode, an encoder's error).
    #[error("audio: {0}")]
    Audio(#[from] stemsep_audio::AudioError),
}

/// Result alias for the shared crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound(e.to_string())
        } else {
            Error::Storage(e.to_string())
        }
    }
}
