//! Handlers, one resource per module, plus the path checks they share.

pub mod files;
pub mod health;
pub mod jobs;
pub mod models;
pub mod page;
pub mod stems;

use stemsep_common::job::{SongHash, Track};

use crate::error::ApiError;

/// A song hash from a URL: exactly 56 hex digits, so no path or key trick gets through.
pub(crate) fn parse_hash(raw: &str) -> Result<SongHash, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "malformed song hash {:?}: expected the 56 hex digits returned by POST /apiv1/separate",
            shorten(raw)
        ))
    })
}

/// A track name from a URL: a stem name (lowercase letters, digits, `_`), `.mp3` optional, `base`
/// for bass. Anything else (dots, slashes, encoded characters, overlong) is malformed (400);
/// whether the job has such a stem is the route's question.
pub(crate) fn parse_track(raw: &str) -> Result<Track, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "malformed track name {:?}: use a stem name such as vocals, drums, bass or other",
            shorten(raw)
        ))
    })
}

/// At most 80 characters of client input in a message.
pub(crate) fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}
