//! Handlers, one resource per module, plus the path checks they share.

pub mod health;
pub mod jobs;
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

/// A track name from a URL. A plain name that is not a track is unknown (404); anything else
/// (dots, slashes, encoded characters, overlong) is malformed (400).
pub(crate) fn parse_track(raw: &str) -> Result<Track, ApiError> {
    if let Ok(t) = raw.parse() {
        return Ok(t);
    }
    let stem = raw.strip_suffix(".mp3").unwrap_or(raw);
    if !stem.is_empty() && stem.len() <= 32 && stem.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Err(ApiError::NotFound(format!(
            "unknown track {stem:?}: use vocals, drums, bass (or base) or other"
        )))
    } else {
        Err(ApiError::BadRequest(format!(
            "malformed track name {:?}",
            shorten(raw)
        )))
    }
}

/// At most 80 characters of client input in a message.
pub(crate) fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}
