//! The files a job's masters make: a track (a stem or `no_<stem>`) in MP3 at any bitrate, FLAC
//! or WAV, made on its first download and kept beside the stems; and `GET /apiv1/zip/<hash>`,
//! every track of a job in one download. A file is made here, in the API process, from the
//! masters the worker stored: the model never runs again. How many are made at once is bounded
//! (`STEMSEP_RENDERS`), since each holds its mix and one master in memory.

use std::io::Write;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use stemsep_common::job::{Job, JobState, SongHash, Track};
use stemsep_common::output::{self, Kind, Mix, Rendition};
use stemsep_common::storage::ObjectKey;
use stemsep_common::Error;

use crate::error::ApiError;
use crate::routes::{parse_hash, parse_track, shorten};
use crate::state::AppState;

/// How a download may differ from the job's own settings.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FileQuery {
    /// MP3 bitrate, kbit/s (default: the job's).
    pub bitrate: Option<u32>,
    /// FLAC: 16 or 24; WAV: 16, 24 or 32 (float) (default: the job's, 24 unless it chose).
    pub bits: Option<u32>,
    /// `rescale`, `clamp` or `none` (default: the job's, rescale unless it chose).
    pub clip: Option<String>,
    /// For a zip: `mp3` (default), `flac` or `wav`.
    pub format: Option<String>,
}

impl FileQuery {
    /// The query of `req`, checked as far as it can be without the job.
    pub fn of(req: &HttpRequest) -> Result<FileQuery, ApiError> {
        web::Query::<FileQuery>::from_query(req.query_string())
            .map(web::Query::into_inner)
            .map_err(|e| {
                ApiError::BadRequest(format!(
                    "bad query: {} (accepted: bitrate, bits, clip, and format for a zip)",
                    shorten(&e.to_string())
                ))
            })
    }

    /// Whether it changes nothing about a track.
    pub fn is_plain(&self) -> bool {
        self.bitrate.is_none() && self.bits.is_none() && self.clip.is_none()
    }
}

/// A track name from a URL with its optional extension: `vocals`, `vocals.mp3`, `no_vocals.flac`.
pub fn parse_file(raw: &str) -> Result<(Track, Option<Kind>), ApiError> {
    match raw
        .rsplit_once('.')
        .map(|(name, ext)| (name, ext.parse::<Kind>()))
    {
        Some((name, Ok(kind))) => Ok((parse_track(name)?, Some(kind))),
        _ => Ok((parse_track(raw)?, None)),
    }
}

/// The file `track` of `job` in `kind` at the job's settings changed by `query`.
pub fn rendition(
    job: &Job,
    track: &Track,
    kind: Kind,
    query: &FileQuery,
) -> Result<Rendition, ApiError> {
    let bad = |e: &dyn std::fmt::Display| ApiError::BadRequest(shorten(&e.to_string()));
    job.output
        .overridden(query.bitrate, query.bits, query.clip.as_deref())
        .map_err(|e| bad(&e))?
        .rendition(track, kind)
        .map_err(|e| bad(&e))
}

/// A done job of `hash`, or a 404 saying why there is none.
pub async fn done_job(state: &AppState, hash: &SongHash, what: &str) -> Result<Job, ApiError> {
    let job = state
        .queue
        .job(hash)
        .await
        .map_err(ApiError::queue)?
        .ok_or_else(|| ApiError::NotFound(format!("no {what} for song {hash}: {NO_SUCH_SONG}")))?;
    match not_done(&job) {
        None => Ok(job),
        Some(why) => Err(ApiError::NotFound(format!(
            "no {what} for song {hash}: {why}"
        ))),
    }
}

/// Why a job of a known song has no files.
pub const NO_SUCH_SONG: &str = "no such song; submit it with POST /apiv1/separate";

/// Why `job` has no files yet (queued, running, failed); `None` once it is done.
pub fn not_done(job: &Job) -> Option<String> {
    match job.state {
        JobState::Done => None,
        JobState::Queued => Some("the song is still queued for separation".to_owned()),
        JobState::Running => Some(format!(
            "the song is being separated ({}% done)",
            job.progress
        )),
        JobState::Failed => Some(format!(
            "separation failed ({}); resubmit the song to retry",
            job.error.as_deref().unwrap_or("no reason recorded")
        )),
    }
}

/// Makes `rendition` of `job` from its masters unless it is already stored; returns its key.
pub async fn ensure(
    state: &AppState,
    job: &Job,
    rendition: &Rendition,
) -> Result<ObjectKey, ApiError> {
    let hash = &job.hash;
    let key = ObjectKey::rendition(hash, rendition);
    if stored(state, &key).await? {
        return Ok(key);
    }
    let sources = job.sources();
    let parts = rendition.parts(&sources).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no {} for song {hash}: {}",
            rendition.track,
            no_such_stem(job)
        ))
    })?;
    let _slot = state.renders.enter().await?;
    // Another download may have made it while this one waited for a slot.
    if stored(state, &key).await? {
        return Ok(key);
    }
    let started = std::time::Instant::now();
    // One master in memory at a time, added into the mix as it is decoded.
    let mut mix = Mix::default();
    for part in parts {
        let bytes = match state.storage.get(&ObjectKey::master(hash, &part)).await {
            Ok(bytes) => bytes,
            Err(Error::NotFound(_)) => {
                return Err(ApiError::NotFound(format!(
                    "no {} for song {hash}: its {part} stem was removed (or separated before \
                     lossless masters were kept); resubmit the song to separate it again",
                    rendition.track
                )))
            }
            Err(e) => return Err(ApiError::storage(e)),
        };
        mix = blocking(move || mix.add(&bytes).map(|()| mix)).await?;
    }
    let wanted = rendition.clone();
    let bytes = blocking(move || mix.encode(&wanted)).await?;
    output::store(&state.queue, &*state.storage, hash, rendition, bytes.into())
        .await
        .map_err(|e| match e {
            Error::Redis(_) => ApiError::queue(e),
            e => ApiError::storage(e),
        })?;
    tracing::info!(%hash, file = %rendition.slug(), seconds = started.elapsed().as_secs_f64(), "file made from masters");
    Ok(key)
}

async fn stored(state: &AppState, key: &ObjectKey) -> Result<bool, ApiError> {
    state.storage.exists(key).await.map_err(ApiError::storage)
}

/// Runs CPU work on the blocking pool; its failure is the server's (a master that does not
/// decode, an encoder's error).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, ApiError> {
    web::block(work)
        .await
        .map_err(|e| ApiError::Internal(format!("making a file did not run: {e}")))?
        .map_err(|e| ApiError::Internal(format!("a file could not be made: {e}")))
}

/// Why a track is not one of `job`'s: the stems its model has.
pub fn no_such_stem(job: &Job) -> String {
    let stems: Vec<String> = job.sources().into_iter().map(String::from).collect();
    format!(
        "model {} gives no such stem; its stems are {} (and no_<stem> for each)",
        job.model,
        stems.join(", ")
    )
}

/// Every track of a job (its stems, or with `two_stems` the stem and `no_<stem>`) in one zip.
#[utoipa::path(
    get,
    path = "/apiv1/zip/{hash}",
    params(
        ("hash" = String, Path, description = "Song hash (56 hex digits)"),
        FileQuery,
    ),
    responses(
        (status = 200, description = "A zip (stored, not compressed: the audio already is) of <hash>/<track>.<ext> files", content_type = "application/zip"),
        (status = 400, description = "Malformed hash or query", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown song, not separated yet, or a stem removed", body = crate::error::ErrorBody),
        (status = 503, description = "Storage or Redis unavailable, or too many files being made; Retry-After says when to come back", body = crate::error::ErrorBody),
    )
)]
pub async fn zip(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let hash = parse_hash(&path)?;
    let query = FileQuery::of(&req)?;
    let kind = match &query.format {
        None => Kind::Mp3,
        Some(f) => f
            .parse()
            .map_err(|e: Error| ApiError::BadRequest(shorten(&e.to_string())))?,
    };
    let job = done_job(&state, &hash, "zip").await?;
    let mut files = Vec::new();
    for track in job.tracks() {
        let lab = ObjectKey::stem(&hash, &track);
        let key = if kind == Kind::Mp3 && query.is_plain() && stored(&state, &lab).await? {
            lab
        } else {
            ensure(&state, &job, &rendition(&job, &track, kind, &query)?).await?
        };
        let bytes = state.storage.get(&key).await.map_err(ApiError::storage)?;
        files.push((format!("{hash}/{track}.{}", kind.extension()), bytes));
    }
    let _slot = state.renders.enter().await?;
    let archive = web::block(move || write_zip(&files))
        .await
        .map_err(|e| ApiError::Internal(format!("the zip was not written: {e}")))??;
    tracing::info!(%hash, format = %kind, bytes = archive.len(), "zip served");
    Ok(HttpResponse::Ok()
        .content_type("application/zip")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{hash}-{kind}.zip\""),
        ))
        .body(archive))
}

fn write_zip(files: &[(String, bytes::Bytes)]) -> Result<Vec<u8>, ApiError> {
    let size: usize = files.iter().map(|(n, b)| b.len() + 2 * n.len() + 100).sum();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::with_capacity(size + 22)));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(size > u32::MAX as usize);
    let fail = |e: &dyn std::fmt::Display| ApiError::Internal(format!("zip: {e}"));
    for (name, bytes) in files {
        zip.start_file(name.as_str(), options)
            .map_err(|e| fail(&e))?;
        zip.write_all(bytes).map_err(|e| fail(&e))?;
    }
    Ok(zip.finish().map_err(|e| fail(&e))?.into_inner())
}
