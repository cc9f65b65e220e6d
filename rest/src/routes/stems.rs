//! A job's tracks: `GET /apiv1/track/<hash>/<track>[.<ext>]` (with HTTP ranges) and
//! `GET|DELETE /apiv1/remove/<hash>/<track>`.

use actix_web::http::header;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use stemsep_common::job::{Job, JobState, SongHash, Track};
use stemsep_common::output::{self, Kind};
use stemsep_common::storage::ObjectKey;
use stemsep_common::Error;

use crate::error::ApiError;
use crate::routes::files::{self, FileQuery};
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

/// The single byte range a `Range` header asks for, resolved against an object of `size` bytes
/// into `start..end` (end exclusive): `None` to serve the whole object (no header, several
/// ranges, other units or junk, as RFC 9110 allows), an error when it lies outside. actix-web
/// parses the header; its resolution clamps the end, so no client value can overflow.
fn requested_range(
    range: Option<&header::Range>,
    size: u64,
) -> Option<Result<(u64, u64), ApiError>> {
    let header::Range::Bytes(specs) = range? else {
        return None;
    };
    let [spec] = specs.as_slice() else {
        return None;
    };
    Some(
        spec.to_satisfiable_range(size)
            .map(|(first, last)| (first, last + 1))
            .ok_or(ApiError::RangeNotSatisfiable(size)),
    )
}

/// Download one track: a stem or `no_<stem>`, MP3 (no extension, or `.mp3`), `.flac` or `.wav`;
/// supports `Range: bytes=...` (206).
#[utoipa::path(
    get,
    path = "/apiv1/track/{hash}/{track}",
    params(
        ("hash" = String, Path, description = "Song hash (56 hex digits)"),
        ("track" = String, Path, description = "a stem of the job's model (GET /apiv1/models: vocals, drums, bass (alias base), other, and e.g. guitar, piano for htdemucs_6s) or no_<stem> (the song without it: no_vocals is the karaoke track), with an optional extension: .mp3 (the default), .flac or .wav"),
        FileQuery,
    ),
    responses(
        (status = 200, description = "The whole file (made from the job's lossless masters on its first download unless the worker made it)", content_type = "audio/mpeg"),
        (status = 206, description = "The requested byte range", content_type = "audio/mpeg"),
        (status = 400, description = "Malformed hash, track name or query (bits 16/24 for FLAC, 16/24/32 for WAV; a bitrate LAME has)", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown song or track, not separated yet, or removed", body = crate::error::ErrorBody),
        (status = 416, description = "Range outside the file", body = crate::error::ErrorBody),
        (status = 503, description = "Storage or Redis unavailable, or too many files being made; Retry-After says when to come back", body = crate::error::ErrorBody),
    )
)]
pub async fn track(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let hash = parse_hash(&path.0)?;
    let (track, kind) = files::parse_file(&path.1)?;
    let query = FileQuery::of(&req)?;
    if query.format.is_some() {
        return Err(ApiError::BadRequest(
            "a track's format is its extension (vocals.flac); format= is for a zip".into(),
        ));
    }
    let kind = kind.unwrap_or(Kind::Mp3);
    let name = format!("{hash}-{track}.{}", kind.extension());
    let lab = ObjectKey::stem(&hash, &track);
    let plain = kind == Kind::Mp3 && query.is_plain();
    if plain {
        // The worker's own MP3 (the lab's file): storage alone answers.
        if let Some(resp) = serve(&state, &req, &lab, "audio/mpeg", &name).await? {
            return Ok(resp);
        }
    }
    let job = match state.queue.job(&hash).await {
        Ok(job) => job,
        // Storage answered "not found"; Redis being down must not turn that into a 503.
        Err(_) if plain => {
            return Err(ApiError::NotFound(format!(
                "no {track} stem for song {hash}: not found"
            )))
        }
        Err(e) => return Err(ApiError::queue(e)),
    };
    let job = match job {
        Some(job) if job.state == JobState::Done => job,
        _ => return Err(missing_stem(job, &hash, &track)),
    };
    if plain && job.tracks().contains(&track) {
        return Err(missing_stem(Some(job), &hash, &track));
    }
    let rendition = files::rendition(&job, &track, kind, &query)?;
    let key = files::ensure(&state, &job, &rendition).await?;
    serve(&state, &req, &key, rendition.format.content_type(), &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no {track} for song {hash}: removed meanwhile")))
}

/// Streams `key` as a download named `name`, honouring one byte range; `None` when storage has
/// no such object.
async fn serve(
    state: &AppState,
    req: &HttpRequest,
    key: &ObjectKey,
    content_type: &str,
    name: &str,
) -> Result<Option<HttpResponse>, ApiError> {
    let range = req.get_header::<header::Range>();
    let opened = match range {
        None => state.storage.read(key, None).await.map(|r| (r, None)),
        // An empty read is the cheapest way to learn the size before choosing the bytes.
        Some(range) => match state.storage.read(key, Some((0, 0))).await {
            Ok(stat) => match requested_range(Some(&range), stat.size) {
                None => state.storage.read(key, None).await.map(|r| (r, None)),
                Some(Ok((start, end))) => state
                    .storage
                    .read(key, Some((start, end)))
                    .await
                    .map(|r| (r, Some((start, end)))),
                Some(Err(e)) => return Err(e),
            },
            Err(e) => Err(e),
        },
    };
    let (reader, served) = match opened {
        Ok(x) => x,
        Err(Error::NotFound(_)) => return Ok(None),
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
    tracing::info!(object = %key, bytes = length, partial = served.is_some(), "track served");
    Ok(Some(
        resp.content_type(content_type)
            .insert_header((header::ACCEPT_RANGES, "bytes"))
            .insert_header((
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ))
            .no_chunking(length)
            .streaming(reader.body),
    ))
}

/// A 404 that says why a track of `job` is not there: no such song, not a track of the job's
/// model, not separated yet, still running, or removed.
fn missing_stem(job: Option<Job>, hash: &SongHash, track: &Track) -> ApiError {
    let why = match job {
        None => files::NO_SUCH_SONG.to_owned(),
        Some(job) if output::parts(track, &job.sources()).is_none() => files::no_such_stem(&job),
        Some(job) => files::not_done(&job).unwrap_or_else(|| {
            "this stem was removed; resubmit the song to separate it again".to_owned()
        }),
    };
    ApiError::NotFound(format!("no {track} stem for song {hash}: {why}"))
}

/// Remove one stem from storage (GET is accepted too, as in the lab, unless the server turns it
/// off).
#[utoipa::path(
    method(delete, get),
    path = "/apiv1/remove/{hash}/{track}",
    params(
        ("hash" = String, Path, description = "Song hash (56 hex digits)"),
        ("track" = String, Path, description = "a stem of the job's model (GET /apiv1/models): vocals, drums, bass (alias base), other, and e.g. guitar, piano for htdemucs_6s; `.mp3` optional"),
    ),
    responses(
        (status = 200, description = "Removed", body = RemoveResponse),
        (status = 400, description = "Malformed hash or track name", body = crate::error::ErrorBody),
        (status = 404, description = "No such stem", body = crate::error::ErrorBody),
        (status = 405, description = "GET where the server removes by DELETE only", body = crate::error::ErrorBody),
        (status = 503, description = "Storage unavailable", body = crate::error::ErrorBody),
    )
)]
pub async fn remove(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hash, track) = (parse_hash(&path.0)?, parse_track(&path.1)?);
    let mut removed = false;
    // The MP3, and the master every other file of the stem is made from: a removed stem is gone
    // in every format, as the lab's removal meant.
    for key in [
        ObjectKey::stem(&hash, &track),
        ObjectKey::master(&hash, &track),
    ] {
        removed |= state
            .storage
            .delete(&key)
            .await
            .map_err(ApiError::storage)?;
    }
    if !removed {
        return Err(ApiError::NotFound(format!(
            "no {track} stem for song {hash} to remove"
        )));
    }
    forget_made_files(&state, &hash).await;
    tracing::info!(%hash, %track, "stem removed");
    Ok(HttpResponse::Ok().json(RemoveResponse {
        hash: hash.to_string(),
        track: track.name().to_owned(),
        reason: format!("Track {track} removed"),
    }))
}

/// Deletes the files made from a job's masters, which may hold a removed stem (a mix does); the
/// others are made again on their next download. Best effort: retention deletes what is left.
async fn forget_made_files(state: &AppState, hash: &SongHash) {
    let made = match state.queue.files(hash).await {
        Ok(made) => made,
        Err(e) => {
            tracing::warn!(%hash, error = %e, "files made from the masters not listed");
            return;
        }
    };
    for rendition in &made {
        if let Err(e) = state
            .storage
            .delete(&ObjectKey::rendition(hash, rendition))
            .await
        {
            tracing::warn!(%hash, file = %rendition.slug(), error = %e, "made file not deleted");
            return;
        }
    }
    if let Err(e) = state.queue.clear_files(hash).await {
        tracing::warn!(%hash, error = %e, "list of made files not cleared");
    }
}

/// `GET /apiv1/remove/...` where the server allows removal by `DELETE` only
/// (`STEMSEP_REMOVE_BY_GET=false`): a link, a crawler or a prefetch must not delete stems.
pub async fn remove_by_get_refused() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed {
        what: "removing a stem with GET is turned off on this server: use DELETE".into(),
        allow: "DELETE",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let resolve = |value: &str, size: u64| {
            let range: Option<header::Range> = value.parse().ok();
            requested_range(range.as_ref(), size).map(|r| r.map_err(|e| e.to_string()))
        };
        assert_eq!(resolve("bytes=0-99", 50), Some(Ok((0, 50))));
        assert_eq!(resolve("bytes=10-19", 50), Some(Ok((10, 20))));
        assert_eq!(resolve("bytes=40-", 50), Some(Ok((40, 50))));
        assert_eq!(resolve("bytes=-10", 50), Some(Ok((40, 50))));
        assert_eq!(resolve("bytes=-100", 50), Some(Ok((0, 50))));
        // The largest end a client can write is clamped, not incremented past u64::MAX.
        assert_eq!(
            resolve("bytes=0-18446744073709551615", 50),
            Some(Ok((0, 50)))
        );
        assert!(matches!(resolve("bytes=50-", 50), Some(Err(_))));
        assert!(matches!(resolve("bytes=-0", 50), Some(Err(_)) | None));
        // Several ranges, other units and junk: the whole object.
        assert_eq!(resolve("bytes=0-1,5-6", 50), None);
        assert_eq!(resolve("items=0-1", 50), None);
        assert_eq!(resolve("bytes=abc", 50), None);
    }
}
