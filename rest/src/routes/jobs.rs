//! Songs in and out of the queue: `POST /apiv1/separate`, `GET /apiv1/queue`,
//! `GET /apiv1/status/<hash>`.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use stemsep_common::job::{Job, JobState, SongHash, Track};
use stemsep_common::queue::Enqueued;
use stemsep_common::storage::ObjectKey;

use crate::error::ApiError;
use crate::routes::parse_hash;
use crate::state::AppState;
use crate::submission::Submission;

/// The lab's submission body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SeparateRequest {
    /// The song, base64 (standard alphabet, padded): MP3, WAV, FLAC, Ogg Vorbis or AAC/M4A (the lab named the field).
    pub mp3: String,
    /// Model name (`GET /apiv1/models` lists them); default `htdemucs`. A non-default model yields a
    /// different hash.
    #[serde(default)]
    pub model: Option<String>,
    /// Optional completion callback (an object; kept as JSON until checked, so an array in its
    /// place is refused rather than read field by field).
    #[serde(default)]
    #[schema(value_type = Option<CallbackRequest>)]
    pub callback: Option<serde_json::Value>,
    /// Formats to have ready when the job is done, besides MP3 (always): `flac`, `wav`. Any
    /// format can still be downloaded later; it is then made on first download.
    #[serde(default)]
    #[schema(example = json!(["flac"]))]
    pub formats: Option<Vec<String>>,
    /// MP3 bitrate in kbit/s, one LAME encodes (8, 16, 24, 32, 40, 48, 64, 80, 96, 112, 128,
    /// 160, 192, 224, 256, 320); default the server's (`STEMSEP_BITRATE`, 320).
    #[serde(default)]
    pub mp3_bitrate: Option<u32>,
    /// Bits per sample of FLAC (16 or 24) and WAV (16, 24, or 32 for float) files; default 24.
    #[serde(default)]
    pub bits: Option<u32>,
    /// demucs' `--clip-mode` for samples beyond full scale: `rescale` (default: the whole file
    /// is turned down just enough, nothing is distorted), `clamp` (peaks are flattened), `none`
    /// (float WAV keeps them; other formats saturate, never wrap around).
    #[serde(default)]
    pub clip_mode: Option<String>,
    /// demucs' `--two-stems`: the job's tracks are this stem and `no_<stem>` (the song without
    /// it, e.g. `no_vocals`: the karaoke track) instead of every stem.
    #[serde(default)]
    pub two_stems: Option<String>,
    /// demucs' `--shifts`: passes over the song at seeded random time shifts, averaged (0, the
    /// default: one pass; at most 10). Each costs a whole separation; a non-zero value gives a
    /// different hash.
    #[serde(default)]
    pub shifts: Option<u32>,
}

/// Where to POST when the job ends.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CallbackRequest {
    /// An http or https URL.
    pub url: String,
    /// Anything; echoed back verbatim in the callback.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// Answer to a submission.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SeparateResponse {
    /// The song hash: SHA-224 hex of the MP3 bytes (model mixed in for non-default models).
    pub hash: String,
    /// What happened: newly enqueued, already queued/running/done, or re-enqueued and why.
    pub reason: String,
}

/// The waiting queue.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueResponse {
    /// Hashes waiting in `toWorker`, newest first (as `LRANGE` lists them).
    pub queue: Vec<String>,
}

/// A job's state.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusResponse {
    /// The song hash.
    pub hash: String,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    /// Percent of the song separated, 0–100.
    pub progress: u8,
    /// Times a worker has claimed the job.
    pub attempts: u32,
    /// Stems currently downloadable.
    pub tracks: Vec<String>,
    /// Every stem the job gives once done (the model's own, the lab's four first).
    pub stems: Vec<String>,
    /// Why the last attempt failed, if it did.
    pub error: Option<String>,
    /// How the completion callback went, once fired.
    pub callback_status: Option<String>,
    /// Model used.
    pub model: String,
    /// The stem the job gives with its `no_<stem>` complement instead of every stem, if asked.
    pub two_stems: Option<String>,
    /// Random time shifts averaged (0: one pass).
    pub shifts: u32,
    /// Formats made when the job was done (`mp3` always); others are made on first download.
    pub formats: Vec<String>,
    /// MP3 bitrate of the job's files, kbit/s.
    pub mp3_bitrate: u32,
    /// Bits per sample of its FLAC and WAV files (32: float WAV).
    pub bits: u32,
    /// Its clip mode: `rescale`, `clamp` or `none`.
    pub clip_mode: String,
}

/// How a submission ended, for metrics and logs.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Enqueued,
    AlreadyQueued,
    AlreadyRunning,
    AlreadyDone,
    RequeuedMissingStems,
    RetriedFailed,
    /// Only reachable through a race with another request that saw the job fail.
    AlreadyFailed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Enqueued => "enqueued",
            Outcome::AlreadyQueued => "already_queued",
            Outcome::AlreadyRunning => "already_running",
            Outcome::AlreadyDone => "already_done",
            Outcome::RequeuedMissingStems => "requeued_missing_stems",
            Outcome::RetriedFailed => "retried_failed",
            Outcome::AlreadyFailed => "already_failed",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            // The lab client prints this exact text.
            Outcome::Enqueued => "Song enqueued for separation",
            Outcome::AlreadyQueued => "Song already queued for separation; not enqueued again",
            Outcome::AlreadyRunning => "Song is being separated right now; not enqueued again",
            Outcome::AlreadyDone => "Song already separated; its stems are ready to download",
            Outcome::RequeuedMissingStems => {
                "Song was separated but some stems have since been removed; re-enqueued for separation"
            }
            Outcome::RetriedFailed => "Previous separation of this song failed; re-enqueued for another try",
            Outcome::AlreadyFailed => "Separation of this song failed; submit it again to retry",
        }
    }

    fn of_existing(state: JobState) -> Self {
        match state {
            JobState::Queued => Outcome::AlreadyQueued,
            JobState::Running => Outcome::AlreadyRunning,
            JobState::Done => Outcome::AlreadyDone,
            JobState::Failed => Outcome::AlreadyFailed,
        }
    }
}

/// Submit a song for separation.
#[utoipa::path(
    post,
    path = "/apiv1/separate",
    request_body = SeparateRequest,
    responses(
        (status = 200, description = "Accepted (new or already known)", body = SeparateResponse),
        (status = 400, description = "Not a JSON object, invalid base64, callback URL or model (see GET /apiv1/models)", body = crate::error::ErrorBody),
        (status = 401, description = "API key missing or unknown (when the server requires keys)", body = crate::error::ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = crate::error::ErrorBody),
        (status = 413, description = "Body over the limit (16 MiB by default)", body = crate::error::ErrorBody),
        (status = 422, description = "Not decodable audio (MP3, WAV, FLAC, Ogg Vorbis, AAC/M4A), or longer than the limit", body = crate::error::ErrorBody),
        (status = 429, description = "Over the client's request rate; Retry-After says when to come back", body = crate::error::ErrorBody),
        (status = 503, description = "Queue full, too many uploads at once, or Redis or storage unavailable; Retry-After says when to come back", body = crate::error::ErrorBody),
    )
)]
pub async fn separate(
    state: web::Data<AppState>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let result = submit(&state, body).await;
    match &result {
        Ok((hash, outcome)) => {
            state.metrics.submission(outcome.label());
            tracing::info!(%hash, outcome = outcome.label(), "submission accepted");
        }
        Err(e) => {
            state.metrics.submission(rejection_label(e));
            tracing::info!(error = %e, "submission refused");
        }
    }
    let (hash, outcome) = result?;
    Ok(HttpResponse::Ok().json(SeparateResponse {
        hash: hash.to_string(),
        reason: outcome.reason().into(),
    }))
}

fn rejection_label(e: &ApiError) -> &'static str {
    match e {
        ApiError::BadRequest(_) => "rejected_bad_request",
        ApiError::Unprocessable(_) => "rejected_unprocessable",
        ApiError::PayloadTooLarge(_) => "rejected_too_large",
        ApiError::Busy { .. } => "rejected_busy",
        ApiError::QueueUnavailable(_) | ApiError::StorageUnavailable(_) => "unavailable",
        _ => "error",
    }
}

/// Seconds a client refused because the queue is full is told to wait.
const QUEUE_FULL_RETRY_AFTER: u64 = 30;

fn queue_full(max: u64) -> ApiError {
    ApiError::Busy {
        what: format!(
            "the queue is full ({max} songs are waiting for separation); try again later"
        ),
        retry_after: QUEUE_FULL_RETRY_AFTER,
    }
}

async fn submit(
    state: &web::Data<AppState>,
    body: web::Payload,
) -> Result<(SongHash, Outcome), ApiError> {
    let _slot = state.uploads.enter().await?;
    let body = read_body(body, state.max_body).await?;
    let served = crate::routes::models::served(state).await?;
    let names: Vec<String> = served.iter().map(|m| m.name.clone()).collect();
    let (max_seconds, bitrate) = (state.max_seconds, state.bitrate);
    // JSON, base64, the audio check and SHA-224 of up to 16 MiB: CPU work, off the event loop.
    let submission = web::block(move || Submission::parse(&body, &names, max_seconds, bitrate))
        .await
        .map_err(|e| ApiError::Internal(format!("upload check did not run: {e}")))??;
    let hash = submission.hash.clone();
    let info = &submission.info;
    tracing::debug!(%hash, seconds = info.seconds, rate = info.sample_rate, channels = info.channels, "audio checked");
    let model = served
        .iter()
        .find(|m| m.name == submission.model)
        .ok_or_else(|| ApiError::Internal("a checked model is not served".into()))?;
    let mut job = Job::new(hash.clone(), submission.model.clone(), submission.callback);
    job.stems = model
        .stems
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::Internal(format!("a served model has a bad stem name: {e}")))?;
    job.shifts = submission.shifts;
    job.output = submission.output;
    job.two_stems = submission.two_stems;
    let sources = job.sources();
    if let Some(stem) = job.two_stems.as_ref().filter(|s| !sources.contains(s)) {
        let names: Vec<&str> = sources.iter().map(Track::name).collect();
        return Err(ApiError::BadRequest(format!(
            "two_stems {stem}: model {} has the stems {}",
            model.name,
            names.join(", ")
        )));
    }

    let previous = state.queue.job(&hash).await.map_err(ApiError::queue)?;
    if let Some(job) = &previous {
        match job.state {
            s @ (JobState::Queued | JobState::Running) => {
                return Ok((hash, Outcome::of_existing(s)))
            }
            JobState::Done if all_stems_present(state, job).await? => {
                return Ok((hash, Outcome::AlreadyDone))
            }
            _ => {}
        }
    }
    // A done job missing stems, or a failed one, is replaced; anything else is new. A full
    // queue refuses it before anything is stored (enqueue checks again, exactly).
    let replace = previous.is_some();
    if let Some(max) = state.queue.settings().max_queued {
        if state.queue.queued().await.map_err(ApiError::queue)? >= max {
            return Err(queue_full(max));
        }
    }
    // Input first, then the queue entry: a queued hash must always find its input. The input is
    // this submission's own object, so nothing else deletes it.
    let input = ObjectKey::input(&job);
    state
        .storage
        .put(&input, submission.audio)
        .await
        .map_err(ApiError::storage)?;
    let enqueued = state.queue.enqueue(&job, replace).await;
    if !matches!(enqueued, Ok(Enqueued::New)) {
        // Not queued after all: the object would be an orphan.
        if let Err(e) = state.storage.delete(&input).await {
            tracing::warn!(%hash, error = %e, "unqueued upload not deleted");
        }
    }
    let outcome = match enqueued.map_err(ApiError::queue)? {
        Enqueued::New => match previous.as_ref().map(|j| j.state) {
            None => Outcome::Enqueued,
            Some(JobState::Failed) => Outcome::RetriedFailed,
            Some(_) => Outcome::RequeuedMissingStems,
        },
        // Another request for the same song won a race; report what it left.
        Enqueued::Existing(s) => Outcome::of_existing(s),
        Enqueued::Full => {
            return Err(queue_full(
                state.queue.settings().max_queued.unwrap_or_default(),
            ))
        }
    };
    // The replaced submission's input, should its worker not have deleted it.
    if let Some(old) = previous.filter(|j| j.upload != job.upload) {
        if let Err(e) = state.storage.delete(&ObjectKey::input(&old)).await {
            tracing::warn!(%hash, error = %e, "replaced upload not deleted");
        }
    }
    Ok((hash, outcome))
}

/// How long a client may take to send its whole body.
const BODY_DEADLINE: Duration = Duration::from_secs(120);

/// Reads the request body, up to `limit` bytes and [`BODY_DEADLINE`].
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Bytes, ApiError> {
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::BadRequest(format!("the request body could not be read: {e}"))
            })?;
            if body.len() + chunk.len() > limit {
                return Err(ApiError::body_too_large(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(BODY_DEADLINE, read)
        .await
        .map_err(|_| {
            ApiError::RequestTimeout(format!(
                "the request body did not arrive within {} s",
                BODY_DEADLINE.as_secs()
            ))
        })?
}

/// Whether a done job still has every MP3 and every master (what all its files are made from).
async fn all_stems_present(state: &AppState, job: &Job) -> Result<bool, ApiError> {
    let (tracks, sources) = (job.tracks(), job.sources());
    let mp3s = tracks.iter().map(|t| ObjectKey::stem(&job.hash, t));
    let masters = sources.iter().map(|s| ObjectKey::master(&job.hash, s));
    Ok(exist(state, mp3s.chain(masters))
        .await?
        .into_iter()
        .all(|e| e))
}

/// The tracks of `job` present in storage, in API order.
pub(crate) async fn available_tracks(state: &AppState, job: &Job) -> Result<Vec<Track>, ApiError> {
    let tracks = job.tracks();
    let found = exist(state, tracks.iter().map(|t| ObjectKey::stem(&job.hash, t))).await?;
    Ok(tracks
        .into_iter()
        .zip(found)
        .filter_map(|(t, e)| e.then_some(t))
        .collect())
}

/// Whether each of `keys` is in storage, asked side by side.
async fn exist(
    state: &AppState,
    keys: impl Iterator<Item = ObjectKey>,
) -> Result<Vec<bool>, ApiError> {
    let checks = keys.map(|key| {
        let storage = state.storage.clone();
        async move { storage.exists(&key).await }
    });
    futures::future::try_join_all(checks)
        .await
        .map_err(ApiError::storage)
}

/// List the songs waiting for a worker. Any request body is ignored (the lab client sends `null`).
#[utoipa::path(
    get,
    path = "/apiv1/queue",
    responses(
        (status = 200, description = "Hashes waiting in toWorker", body = QueueResponse),
        (status = 503, description = "Redis unavailable", body = crate::error::ErrorBody),
    )
)]
pub async fn queue(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let waiting = state.queue.waiting().await.map_err(ApiError::queue)?;
    tracing::debug!(waiting = waiting.len(), "queue listed");
    Ok(HttpResponse::Ok().json(QueueResponse { queue: waiting }))
}

/// A job's state, progress and available stems.
#[utoipa::path(
    get,
    path = "/apiv1/status/{hash}",
    params(("hash" = String, Path, description = "Song hash (56 hex digits)")),
    responses(
        (status = 200, description = "The job", body = StatusResponse),
        (status = 400, description = "Malformed hash", body = crate::error::ErrorBody),
        (status = 404, description = "No such job", body = crate::error::ErrorBody),
        (status = 503, description = "Redis or storage unavailable", body = crate::error::ErrorBody),
    )
)]
pub async fn status(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let hash = parse_hash(&path)?;
    let job = state
        .queue
        .job(&hash)
        .await
        .map_err(ApiError::queue)?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no job for song {hash}; submit it with POST /apiv1/separate"
            ))
        })?;
    let tracks = available_tracks(&state, &job).await?;
    Ok(HttpResponse::Ok().json(StatusResponse {
        hash: hash.to_string(),
        state: job.state.name().to_owned(),
        progress: job.progress,
        attempts: job.attempts,
        tracks: tracks.iter().map(|t| t.name().to_owned()).collect(),
        stems: job.tracks().iter().map(|t| t.name().to_owned()).collect(),
        error: job.error,
        callback_status: job.callback_status,
        two_stems: job.two_stems.map(String::from),
        shifts: job.shifts,
        formats: job
            .output
            .ready
            .iter()
            .map(|k| k.extension().to_owned())
            .collect(),
        mp3_bitrate: job.output.mp3_kbps,
        bits: job.output.bits(),
        clip_mode: job.output.clip.to_string(),
        model: job.model,
    }))
}
