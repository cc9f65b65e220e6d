//! The API's one error type and the only place an HTTP status is chosen.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// Every way a request can fail, worded for the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request: bad JSON, base64, URL, model, hash or path (400).
    #[error("{0}")]
    BadRequest(String),
    /// No API key, or an unknown one, where keys are required (401).
    #[error("{0}")]
    Unauthorized(String),
    /// No such song, job or stem (404).
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not for this method on this server (405); carries the allowed one.
    #[error("{what}")]
    MethodNotAllowed {
        /// What to do instead.
        what: String,
        /// The method that is allowed.
        allow: &'static str,
    },
    /// The request body did not arrive in time (408).
    #[error("{0}")]
    RequestTimeout(String),
    /// The body exceeds the configured limit (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The range lies outside the object (416); carries the object's size in bytes.
    #[error("requested range not satisfiable: the object has {0} bytes")]
    RangeNotSatisfiable(u64),
    /// Well-formed but unusable content: not a decodable MP3, or too long (422).
    #[error("{0}")]
    Unprocessable(String),
    /// The client sent more requests than its rate allows (429).
    #[error("too many requests: slow down and retry in {retry_after} s")]
    RateLimited {
        /// Seconds until the next request is allowed.
        retry_after: u64,
    },
    /// The server is at a limit (queue full, uploads in flight) and refuses more for now (503).
    #[error("{what}")]
    Busy {
        /// Which limit, in words.
        what: String,
        /// Seconds after which trying again makes sense.
        retry_after: u64,
    },
    /// Redis is unreachable (503); the server recovers by itself when it returns.
    #[error("the job queue (Redis) is unavailable, try again shortly: {0}")]
    QueueUnavailable(String),
    /// Object storage is unreachable or failing (503).
    #[error("storage is unavailable, try again shortly: {0}")]
    StorageUnavailable(String),
    /// A bug or corrupt record (500).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The JSON body of every error: `{"error": "..."}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, in words a user can act on.
    pub error: String,
}

impl ApiError {
    /// The 413 for a body over `max_body` bytes; the web page shows this same text when it
    /// refuses a file before sending it.
    pub fn body_too_large(max_body: usize) -> Self {
        ApiError::PayloadTooLarge(format!(
            "request body too large: the limit is {} MiB (base64 makes an MP3 a third larger)",
            max_body / (1024 * 1024)
        ))
    }

    /// A queue-side failure: Redis errors are 503, anything else is internal.
    pub fn queue(e: stemsep_common::Error) -> Self {
        match e {
            stemsep_common::Error::Redis(e) => ApiError::QueueUnavailable(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }

    /// A storage-side failure (not-found is handled by callers, who know what was missing).
    pub fn storage(e: stemsep_common::Error) -> Self {
        match e {
            stemsep_common::Error::NotFound(what) => {
                ApiError::NotFound(format!("{what} not found"))
            }
            other => ApiError::StorageUnavailable(other.to_string()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::QueueUnavailable(_)
            | ApiError::StorageUnavailable(_)
            | ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        match self {
            ApiError::RangeNotSatisfiable(size) => {
                resp.insert_header(("Content-Range", format!("bytes */{size}")));
            }
            ApiError::QueueUnavailable(_) | ApiError::StorageUnavailable(_) => {
                resp.insert_header(("Retry-After", "5"));
            }
            ApiError::RateLimited { retry_after } | ApiError::Busy { retry_after, .. } => {
                resp.insert_header(("Retry-After", retry_after.to_string()));
            }
            ApiError::Unauthorized(_) => {
                resp.insert_header(("WWW-Authenticate", "Bearer"));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                resp.insert_header(("Allow", *allow));
            }
            _ => {}
        }
        resp.json(ErrorBody {
            error: self.to_string(),
        })
    }
}
