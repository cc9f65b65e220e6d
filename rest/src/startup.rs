//! Building and running the server: listener, state, route table, body limits, metrics.

use std::net::TcpListener;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::error::JsonPayloadError;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpRequest, HttpServer};

use crate::config::Settings;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::openapi::openapi_json;
use crate::routes::page::{self, Page};
use crate::routes::{health, jobs, models, stems};
use crate::state::AppState;

/// A bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
}

impl Application {
    /// Connects nothing yet (Redis is reached lazily, so the server starts while Redis is down),
    /// opens storage, binds `settings.bind` and registers every route.
    pub async fn build(settings: &Settings) -> std::io::Result<Self> {
        let queue = settings.redis.queue().map_err(std::io::Error::other)?;
        let storage = settings
            .storage
            .storage()
            .await
            .map_err(std::io::Error::other)?;
        let models: Vec<String> = settings
            .models
            .iter()
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .collect();
        // The page's own list, for when GET /apiv1/models cannot answer: the configured names, or
        // the default model the lab clients use.
        let fallback = if models.is_empty() {
            vec![stemsep_common::job::DEFAULT_MODEL.to_owned()]
        } else {
            models.clone()
        };
        let page = Page::render(&fallback, settings.max_body_bytes());
        let state = AppState {
            queue,
            storage,
            models,
            max_seconds: settings.max_seconds,
            metrics: Metrics::new(),
            page,
        };
        let listener = TcpListener::bind(&settings.bind)?;
        let port = listener.local_addr()?.port();
        let server = serve(
            listener,
            state.clone(),
            settings.max_body_bytes(),
            settings.http_workers,
        )?;
        Ok(Application {
            port,
            server,
            state,
        })
    }

    /// The port actually bound (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The shared state (tests inspect the queue and storage through it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until the process is stopped (SIGINT/SIGTERM stop it gracefully).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

fn serve(
    listener: TcpListener,
    state: AppState,
    max_body: usize,
    workers: usize,
) -> std::io::Result<Server> {
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        let json = web::JsonConfig::default()
            .limit(max_body)
            // requests sends JSON with its content type, but curl users often forget it.
            .content_type_required(false)
            .error_handler(move |err, _req| json_error(err, max_body).into());
        App::new()
            .app_data(data.clone())
            .app_data(json)
            .app_data(web::PayloadConfig::new(max_body))
            .wrap(from_fn(observe))
            .route("/", web::get().to(page::index))
            .route("/assets/{name}", web::get().to(page::asset))
            .route("/healthz", web::get().to(health::healthz))
            .route("/metrics", web::get().to(health::metrics))
            .service(
                web::scope("/apiv1")
                    .route("/separate", web::post().to(jobs::separate))
                    .route("/queue", web::get().to(jobs::queue))
                    .route("/status/{hash}", web::get().to(jobs::status))
                    .route("/models", web::get().to(models::models))
                    // `{track:.*}` takes the rest of the path, so extra segments and encoded
                    // slashes reach the track check (400) instead of a bare 404.
                    .route("/track/{hash}/{track:.*}", web::get().to(stems::track))
                    .route("/remove/{hash}/{track:.*}", web::get().to(stems::remove))
                    .route("/remove/{hash}/{track:.*}", web::delete().to(stems::remove))
                    .route("/openapi.json", web::get().to(openapi_json)),
            )
            .default_service(web::to(not_found))
    })
    .workers(workers.max(1))
    .listen(listener)?
    .run();
    Ok(server)
}

/// Oversize bodies are 413, everything else wrong with the JSON is 400.
fn json_error(err: JsonPayloadError, max_body: usize) -> ApiError {
    match err {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::body_too_large(max_body)
        }
        JsonPayloadError::ContentType => ApiError::BadRequest("the body must be JSON".into()),
        other => ApiError::BadRequest(format!("invalid JSON body: {other}")),
    }
}

async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route {} {}",
        req.method(),
        crate::routes::shorten(req.path())
    )))
}

/// Counts and logs every request with its outcome.
async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().to_string();
    let path = crate::routes::shorten(req.path());
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let res = next.call(req).await;
    let status = match &res {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.as_response_error().status_code().as_u16(),
    };
    let elapsed = started.elapsed();
    if let Some(state) = state {
        state
            .metrics
            .observe_request(&route, &method, status, elapsed);
    }
    if status >= 500 {
        tracing::warn!(%method, %path, status, ms = elapsed.as_millis() as u64, "request failed");
    } else {
        tracing::info!(%method, %path, status, ms = elapsed.as_millis() as u64, "request");
    }
    res
}
