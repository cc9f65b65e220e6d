//! Readiness and metrics: `GET /healthz`, `GET /metrics`. (`GET /`, the load balancer's
//! liveness check, is the web page: `routes::page`.)

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::state::AppState;

/// Readiness of each dependency.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthResponse {
    /// `ok`, or why Redis failed.
    pub redis: String,
    /// `ok`, or why storage failed.
    pub storage: String,
    /// Present when something failed: a summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// 200 when Redis answers PING and storage answers its check; else 503 naming what failed.
#[utoipa::path(
    get,
    path = "/healthz",
    responses(
        (status = 200, description = "Ready", body = HealthResponse),
        (status = 503, description = "Redis or storage unreachable", body = HealthResponse),
    )
)]
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let (redis, storage) = futures::join!(state.queue.ping(), state.storage.check());
    let word = |r: &stemsep_common::Result<()>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.to_string(),
    };
    let mut body = HealthResponse {
        redis: word(&redis),
        storage: word(&storage),
        error: None,
    };
    if redis.is_ok() && storage.is_ok() {
        return HttpResponse::Ok().json(body);
    }
    let failed: Vec<&str> = [("redis", redis.is_err()), ("storage", storage.is_err())]
        .into_iter()
        .filter_map(|(n, bad)| bad.then_some(n))
        .collect();
    body.error = Some(format!("not ready: {} unreachable", failed.join(" and ")));
    tracing::warn!(redis = %body.redis, storage = %body.storage, "readiness check failed");
    HttpResponse::ServiceUnavailable().json(body)
}

/// Prometheus text format; queue depths are read from Redis at scrape time.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let depths = async {
        let lists = state.queue.depths().await?;
        Ok::<_, stemsep_common::Error>((lists, state.queue.delayed_count().await?))
    };
    state.metrics.set_queue(depths.await.ok());
    state.metrics.set_uploads(state.uploads.in_flight());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
