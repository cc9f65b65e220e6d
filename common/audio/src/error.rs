//! What can go wrong reading or writing audio.

/// A failure to read or write audio; [`AudioError::is_bad_input`] tells the input's fault from
/// ours.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The input has no bytes at all.
    #[error("the input is empty: send an MP3, WAV, FLAC, Ogg Vorbis or AAC/M4A file")]
    Empty,
    /// The bytes are not a recognised audio container/codec.
    #[error(
        "the input is not a supported audio file (MP3, WAV, FLAC, Ogg Vorbis or AAC/M4A): {0}"
    )]
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
    /// The requested MP3 bitrate is not one LAME supports.
    #[error("unsupported MP3 bitrate {0} kbit/s; use one of 8, 16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256 or 320")]
    Bitrate(u32),
    /// An output format or its parameters are not ones we write.
    #[error("unsupported output format: {0}")]
    Format(String),
    /// Encoding failed.
    #[error("encoding failed: {0}")]
    Encode(String),
}

impl AudioError {
    /// True when the error is the input's fault (retrying the same bytes cannot succeed).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            AudioError::Empty
                | AudioError::NotAudio(_)
                | AudioError::Corrupt(_)
                | AudioError::NoAudio
                | AudioError::TooLong { .. }
        )
    }
}
