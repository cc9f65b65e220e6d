//! The OpenAPI 3 description of every route, served at `GET /apiv1/openapi.json`.

use actix_web::HttpResponse;
use utoipa::OpenApi;

use crate::error::ErrorBody;
use crate::routes::health::{self, HealthResponse};
use crate::routes::jobs::{
    self, CallbackRequest, QueueResponse, SeparateRequest, SeparateResponse, StatusResponse,
};
use crate::routes::models::{self, ModelEntry, ModelsResponse};
use crate::routes::stems::{self, RemoveResponse};
use crate::routes::{files, page};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "stemsep",
        description = "Music stem separation with the Demucs family (vocals, drums, bass, other, and each model's own stems), compatible with the course lab's clients. Errors are JSON {\"error\": ...}."
    ),
    paths(
        jobs::separate,
        jobs::queue,
        jobs::status,
        models::models,
        stems::track,
        files::zip,
        stems::remove,
        page::index,
        page::asset,
        health::healthz,
        health::metrics,
        openapi_json,
    ),
    components(schemas(
        SeparateRequest,
        CallbackRequest,
        SeparateResponse,
        QueueResponse,
        StatusResponse,
        RemoveResponse,
        ModelsResponse,
        ModelEntry,
        HealthResponse,
        ErrorBody,
    ))
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/apiv1/openapi.json", responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
