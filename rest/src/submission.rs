//! What a `POST /apiv1/separate` body must be before it reaches Redis or storage: a JSON object
//! naming a model the server offers, an http(s) callback, base64 of audio the worker can decode,
//! no longer than the limit. The handler and the `separate_body` fuzz target (`rest/fuzz/`) run this same code, so
//! what the fuzzer proves about it holds for the server.

use base64::Engine as _;
use bytes::Bytes;
use stemsep_audio::{AudioError, AudioInfo};
use stemsep_common::job::{Callback, SongHash, Track, DEFAULT_MODEL};
use stemsep_common::output::{Kind, Settings};

use crate::error::ApiError;
use crate::routes::jobs::{CallbackRequest, SeparateRequest};
use crate::routes::shorten;

/// A submission that passed every check made without Redis or storage.
#[derive(Debug)]
pub struct Submission {
    /// The model to separate with (one the server offers).
    pub model: String,
    /// Where to report the outcome, if anywhere.
    pub callback: Option<Callback>,
    /// The uploaded file, decoded from base64.
    pub audio: Bytes,
    /// What the audio check found: length, sample rate, channels.
    pub info: AudioInfo,
    /// The song hash: SHA-224 of the bytes, with the model and shifts mixed in unless they are
    /// the defaults.
    pub hash: SongHash,
    /// demucs' `--two-stems`: this stem and `no_<stem>` are the job's tracks.
    pub two_stems: Option<Track>,
    /// Random time shifts averaged.
    pub shifts: u32,
    /// How the job's files are made.
    pub output: Settings,
}

/// Most shifts a request may ask for: each costs a whole separation of the song.
pub const MAX_SHIFTS: u32 = 10;

impl Submission {
    /// Checks a request body: a JSON object (serde would also read the fields of a JSON array,
    /// in order), then [`Submission::check`]. CPU-bound: call it off the event loop.
    pub fn parse(
        body: &[u8],
        models: &[String],
        max_seconds: u64,
        bitrate: u32,
    ) -> Result<Submission, ApiError> {
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(not_an_object("the body"));
        }
        let req: SeparateRequest = serde_json::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!("invalid JSON body: {}", shorten(&e.to_string())))
        })?;
        Submission::check(req, models, max_seconds, bitrate)
    }

    /// Checks `req` in the order the client's mistakes are reported: the model is one of
    /// `models`, the result settings (formats, bitrate, bits, clip mode, two stems, shifts) are
    /// ones the server makes, the callback URL is http(s) with a host, `mp3` is base64, and its
    /// bytes are audio the worker decodes ([`stemsep_audio::probe`]), at most `max_seconds` long.
    /// `bitrate` is the MP3 bitrate when the request names none. Every failure is a 4xx
    /// [`ApiError`]. CPU-bound (the whole file is decoded): call it off the event loop.
    pub fn check(
        req: SeparateRequest,
        models: &[String],
        max_seconds: u64,
        bitrate: u32,
    ) -> Result<Submission, ApiError> {
        let model = req
            .model
            .clone()
            .unwrap_or_else(|| DEFAULT_MODEL.to_owned());
        if !models.contains(&model) {
            return Err(ApiError::BadRequest(format!(
                "unknown model {:?}: this server offers {}",
                shorten(&model),
                models.join(", ")
            )));
        }
        let output = settings(&req, bitrate)?;
        let two_stems = match &req.two_stems {
            None => None,
            Some(stem) => Some(
                stem.parse::<Track>()
                    .ok()
                    .filter(|t| !t.name().starts_with("no_"))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "two_stems {:?} is not a stem name such as vocals",
                            shorten(stem)
                        ))
                    })?,
            ),
        };
        let shifts = req.shifts.unwrap_or(0);
        if shifts > MAX_SHIFTS {
            return Err(ApiError::BadRequest(format!(
                "shifts {shifts}: at most {MAX_SHIFTS} (each costs a whole separation)"
            )));
        }
        let callback = match req.callback {
            None | Some(serde_json::Value::Null) => None,
            Some(v @ serde_json::Value::Object(_)) => {
                let cb: CallbackRequest = serde_json::from_value(v).map_err(|e| {
                    ApiError::BadRequest(format!("invalid callback: {}", shorten(&e.to_string())))
                })?;
                Some(validate_callback(cb)?)
            }
            Some(_) => return Err(not_an_object("callback")),
        };
        let audio = decode_base64(&req.mp3)?;
        drop(req.mp3);
        let max_duration = std::time::Duration::from_secs(max_seconds);
        let info = stemsep_audio::probe(&audio, max_duration).map_err(|e| match e {
            AudioError::TooLong { secs, .. } => ApiError::Unprocessable(format!(
                "the song is longer than {max_seconds} s (at least {secs:.0} s); send a song of at most {} min {} s",
                max_seconds / 60,
                max_seconds % 60
            )),
            other => ApiError::Unprocessable(format!("the upload is not decodable audio ({other})")),
        })?;
        let hash = SongHash::with_shifts(&audio, &model, shifts);
        Ok(Submission {
            model,
            callback,
            audio,
            info,
            hash,
            two_stems,
            shifts,
            output,
        })
    }
}

/// The request's result settings over the defaults, checked.
fn settings(req: &SeparateRequest, bitrate: u32) -> Result<Settings, ApiError> {
    let bad = |e: stemsep_common::Error| ApiError::BadRequest(shorten(&e.to_string()));
    let defaults = Settings {
        mp3_kbps: bitrate,
        ..Settings::default()
    };
    let mut out = defaults
        .overridden(req.mp3_bitrate, req.bits, req.clip_mode.as_deref())
        .map_err(bad)?;
    if let Some(formats) = &req.formats {
        let mut ready = vec![Kind::Mp3];
        for f in formats {
            let kind: Kind = f.parse().map_err(bad)?;
            if !ready.contains(&kind) {
                ready.push(kind);
            }
        }
        out.ready = ready;
    }
    out.validated()
        .map_err(|e| ApiError::BadRequest(format!("{e} (fields mp3_bitrate, bits, formats)")))
}

fn not_an_object(what: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "{what} must be a JSON object, as in {{\"mp3\": \"<base64>\", \"callback\": {{\"url\": \"...\", \"data\": ...}}}}"
    ))
}

fn validate_callback(cb: CallbackRequest) -> Result<Callback, ApiError> {
    // Private and loopback targets are accepted here (the lab client uses localhost); the worker
    // refuses them when it fires the callback.
    let url = url::Url::parse(&cb.url).map_err(|e| {
        ApiError::BadRequest(format!(
            "callback.url {:?} is not a URL: {e}",
            shorten(&cb.url)
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::BadRequest(format!(
            "callback.url {:?} must be an http or https URL with a host",
            shorten(&cb.url)
        )));
    }
    Ok(Callback {
        url: url.to_string(),
        data: cb.data,
    })
}

fn decode_base64(text: &str) -> Result<Bytes, ApiError> {
    // Tolerate line breaks (Python's base64.encodebytes wraps at 76 columns).
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map(Bytes::from)
        .map_err(|e| ApiError::BadRequest(format!("field mp3 is not valid base64: {e}")))
}
