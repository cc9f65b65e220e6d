//! Building and running the server: listener, state, route table, the edge guard, metrics, and
//! the upkeep it does on a timer.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpRequest, HttpServer};

use crate::auth::AuthMode;
use crate::config::Settings;
use crate::error::ApiError;
use crate::guard::guard;
use crate::limits::{Gate, RateLimits};
use crate::metrics::Metrics;
use crate::openapi::openapi_json;
use crate::routes::page::{self, Page};
use crate::routes::{files, health, jobs, models, stems};
use crate::state::AppState;

/// How often the server returns jobs past their back-off to the queue, deletes jobs past their
/// retention (workers do both too; the API does them as well because KEDA may have scaled the
/// workers to zero meanwhile) and forgets idle rate-limit buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(2);

/// How long a download waits for a slot to make its file in before it gets 503: a file takes
/// seconds to make, so a short queue of them is worth waiting out.
const RENDER_WAIT: Duration = Duration::from_secs(30);

/// A bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
}

impl Application {
    /// Checks the settings, connects nothing yet (Redis is reached lazily, so the server starts
    /// while Redis is down), opens storage, binds `settings.bind` and registers every route.
    pub async fn build(settings: &Settings) -> std::io::Result<Self> {
        settings
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let mut queue_settings = settings.redis.queue_settings();
        queue_settings.max_queued = (settings.max_queue > 0).then_some(settings.max_queue);
        let queue =
            stemsep_common::queue::Queue::new(queue_settings).map_err(std::io::Error::other)?;
        let storage = settings
            .storage
            .storage()
            .await
            .map_err(std::io::Error::other)?;
        let models = settings.model_names();
        // The page's own list, for when GET /apiv1/models cannot answer: the configured names, or
        // the default model the lab clients use.
        let fallback = if models.is_empty() {
            vec![stemsep_common::job::DEFAULT_MODEL.to_owned()]
        } else {
            models.clone()
        };
        let page = Page::render(&fallback, settings.max_body_bytes());
        let keys = match settings.auth {
            AuthMode::Off => None,
            AuthMode::Keys => Some(Arc::new(settings.api_keys.clone())),
        };
        let state = AppState {
            queue,
            storage,
            models: models.into(),
            max_seconds: settings.max_seconds,
            max_body: settings.max_body_bytes(),
            keys,
            rates: RateLimits::new(settings.rate_per_min, settings.rate_burst).map(Arc::new),
            uploads: Gate::new(
                settings.max_uploads as usize,
                Duration::from_secs(settings.upload_wait_secs),
                "the server is busy with other uploads; try again shortly",
            ),
            renders: Gate::new(
                settings.renders as usize,
                RENDER_WAIT,
                "the server is busy making other files; try again shortly",
            ),
            bitrate: settings.bitrate,
            metrics: Metrics::new(),
            page,
        };
        let listener = TcpListener::bind(&settings.bind)?;
        let port = listener.local_addr()?.port();
        let server = serve(
            listener,
            state.clone(),
            settings.http_workers as usize,
            settings.remove_by_get,
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
        let upkeep = tokio::spawn(upkeep(self.state.clone()));
        let served = self.server.await;
        upkeep.abort();
        served
    }
}

/// What the server does on a timer: see [`UPKEEP_EVERY`].
async fn upkeep(state: AppState) {
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match state.queue.promote_due(1000).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(promoted = n, "back-off over: jobs returned to the queue"),
            // Redis being down is reported by the requests that need it.
            Err(e) => tracing::debug!(error = %e, "delayed jobs not promoted"),
        }
        if let Err(e) = stemsep_common::retention::sweep(&state.queue, &state.storage).await {
            tracing::debug!(error = %e, "retention sweep failed");
        }
        if let Some(rates) = &state.rates {
            rates.forget_idle();
        }
    }
}

fn serve(
    listener: TcpListener,
    state: AppState,
    workers: usize,
    remove_by_get: bool,
) -> std::io::Result<Server> {
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        let remove_get = if remove_by_get {
            web::get().to(stems::remove)
        } else {
            web::get().to(stems::remove_by_get_refused)
        };
        App::new()
            .app_data(data.clone())
            .wrap(from_fn(guard))
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
                    .route("/zip/{hash}", web::get().to(files::zip))
                    .route("/remove/{hash}/{track:.*}", remove_get)
                    .route("/remove/{hash}/{track:.*}", web::delete().to(stems::remove))
                    .route("/openapi.json", web::get().to(openapi_json)),
            )
            .default_service(web::to(not_found))
    })
    .workers(workers)
    .listen(listener)?
    .run();
    Ok(server)
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
