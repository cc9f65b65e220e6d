//! Separated stems: `GET /apiv1/track/<hash>/<track>` (with HTTP ranges) and
//! `GET|DELETE /apiv1/remove/<hash>/<track>`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use stemsep_common::job::{JobState, SongHash, Track};
use stemsep_common::storage::ObjectKey;
use stemsep_common::Error;

use crate::error::ApiError;
use crate::routes::{parse_hash, parse_track};
use crate::state::AppState;

/// Answer to a removal.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RemoveResponse {
    /// The song hash.
    pub hash: String,
    /// The removed track.
    pub track: String,
    /// What happened.
    pub reason: String,
}

/// A byte range request, inclusive bounds as in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteRange {
    /// `bytes=a-b` or `bytes=a-`.
    From(u64, Option<u64>),
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

/// Parses a single `bytes=` range; anything else (several ranges, other units, junk) is ignored
/// and the whole object served, as RFC 9110 allows.
fn parse_range(value: &str) -> Option<ByteRange> {
    let spec = value.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        return b.parse().ok().map(ByteRange::Suffix);
    }
    let start = a.parse().ok()?;
    let end = if b.is_empty() {
        None
    } else {
        Some(b.parse().ok()?)
    };
    if end.is_some_and(|e| e < start) {
        return None;
    }
    Some(ByteRange::From(start, end))
}

/// Resolves a range against the object size into `start..end` (end exclusive).
fn resolve(range: ByteRange, size: u64) -> Result<(u64, u64), ApiError> {
    let (start, end) = match range {
        ByteRange::From(start, end) => (start, end.map_or(size, |e| (e + 1).min(size))),
        ByteRange::Suffix(n) => (size.saturating_sub(n), size),
    };
    if start >= size || start >= end {
        return Err(ApiError::RangeNotSatisfiable(size));
    }
    Ok((start, end))
}

/// Download one stem as `audio/mpeg`; supports `Range: bytes=...` (206).
#[utoipa::path(
    get,
    path = "/apiv1/track/{hash}/{track}",
    params(
        ("hash" = String, Path, description = "Song hash (56 hex digits)"),
        ("track" = String, Path, description = "vocals, drums, bass (alias base) or other; `.mp3` optional"),
    ),
    responses(
        (status = 200, description = "The whole stem", content_type = "audio/mpeg"),
        (status = 206, description = "The requested byte range", content_type = "audio/mpeg"),
        (status = 400, description = "Malformed hash or track name", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown song or track, or not separated yet", body = crate::error::ErrorBody),
        (status = 416, description = "Range outside the stem", body = crate::error::ErrorBody),
        (status = 503, description = "Storage unavailable", body = crate::error::ErrorBody),
    )
)]
pub async fn track(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hash, track) = (parse_hash(&path.0)?, parse_track(&path.1)?);
    let key = ObjectKey::stem(&hash, track);
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_range);
    let opened = match range {
        None => state.storage.read(&key, None).await.map(|r| (r, None)),
        Some(range) => match state.storage.read(&key, Some((0, 0))).await {
            // An empty read is the cheapest way to learn the size before choosing the bytes.
            Ok(stat) => match resolve(range, stat.size) {
                Ok((start, end)) => state
                    .storage
                    .read(&key, Some((start, end)))
                    .await
                    .map(|r| (r, Some((start, end)))),
                Err(e) => return Err(e),
            },
            Err(e) => Err(e),
        },
    };
    let (reader, served) = match opened {
        Ok(x) => x,
        Err(Error::NotFound(_)) => return Err(missing_stem(&state, &hash, track).await),
        Err(e) => return Err(ApiError::storage(e)),
    };
    let size = reader.size;
    let mut resp = match served {
        None => HttpResponse::Ok(),
        Some((start, end)) => {
            let mut r = HttpResponse::PartialContent();
            r.insert_header((
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{size}", end - 1),
            ));
            r
        }
    };
    let length = served.map_or(size, |(s, e)| e - s);
    tracing::info!(%hash, %track, bytes = length, partial = served.is_some(), "stem served");
    Ok(resp
        .content_type("audio/mpeg")
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{hash}-{track}.mp3\""),
        ))
        .no_chunking(length)
        .streaming(reader.body))
}

/// A 404 that says why: not separated yet, still running, or removed.
async fn missing_stem(state: &AppState, hash: &SongHash, track: Track) -> ApiError {
    let why = match state.queue.job(hash).await {
        Ok(None) => "no such song; submit it with POST /apiv1/separate".to_owned(),
        Ok(Some(job)) => match job.state {
            JobState::Queued => "the song is still queued for separation".to_owned(),
            JobState::Running => format!("the song is being separated ({}% done)", job.progress),
            JobState::Done => {
                "this stem was removed; resubmit the song to separate it again".to_owned()
            }
            JobState::Failed => format!(
                "separation failed ({}); resubmit the song to retry",
                job.error.as_deref().unwrap_or("no reason recorded")
            ),
        },
        // Storage answered "not found"; Redis being down must not turn that into a 503.
        Err(_) => "not found".to_owned(),
    };
    ApiError::NotFound(format!("no {track} stem for song {hash}: {why}"))
}

/// Remove one stem from storage (GET is accepted too, as in the lab).
#[utoipa::path(
    method(delete, get),
    path = "/apiv1/remove/{hash}/{track}",
    params(
        ("hash" = String, Path, description = "Song hash (56 hex digits)"),
        ("track" = String, Path, description = "vocals, drums, bass (alias base) or other; `.mp3` optional"),
    ),
    responses(
        (status = 200, description = "Removed", body = RemoveResponse),
        (status = 400, description = "Malformed hash or track name", body = crate::error::ErrorBody),
        (status = 404, description = "No such stem", body = crate::error::ErrorBody),
        (status = 503, description = "Storage unavailable", body = crate::error::ErrorBody),
    )
)]
pub async fn remove(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hash, track) = (parse_hash(&path.0)?, parse_track(&path.1)?);
    let removed = state
        .storage
        .delete(&ObjectKey::stem(&hash, track))
        .await
        .map_err(ApiError::storage)?;
    if !removed {
        return Err(ApiError::NotFound(format!(
            "no {track} stem for song {hash} to remove"
        )));
    }
    tracing::info!(%hash, %track, "stem removed");
    Ok(HttpResponse::Ok().json(RemoveResponse {
        hash: hash.to_string(),
        track: track.name().to_owned(),
        reason: format!("Track {track} removed"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(
            parse_range("bytes=0-99"),
            Some(ByteRange::From(0, Some(99)))
        );
        assert_eq!(parse_range("bytes=100-"), Some(ByteRange::From(100, None)));
        assert_eq!(parse_range("bytes=-10"), Some(ByteRange::Suffix(10)));
        assert_eq!(parse_range("bytes=5-1"), None);
        assert_eq!(parse_range("bytes=0-1,5-6"), None);
        assert_eq!(parse_range("items=0-1"), None);
        assert_eq!(resolve(ByteRange::From(0, Some(99)), 50).unwrap(), (0, 50));
        assert_eq!(resolve(ByteRange::Suffix(10), 50).unwrap(), (40, 50));
        assert_eq!(resolve(ByteRange::Suffix(100), 50).unwrap(), (0, 50));
        assert!(resolve(ByteRange::From(50, None), 50).is_err());
        assert!(resolve(ByteRange::Suffix(0), 50).is_err());
    }
}
