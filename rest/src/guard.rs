//! The edge of the API, in front of every route: who is asking (an API key when authentication is
//! on, else the peer address) and whether they may ask now (their rate). The load balancer's and
//! Prometheus' routes stay open to anyone.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;

use crate::auth::presented_key;
use crate::error::ApiError;
use crate::limits::Client;
use crate::state::AppState;

/// Paths that need no key and count against no rate: the page (the load balancer's liveness
/// check), readiness, metrics.
pub const OPEN_PATHS: [&str; 3] = ["/", "/healthz", "/metrics"];

/// The page's assets, open like the page itself: they are public, built into the binary.
const OPEN_PREFIX: &str = "/assets/";

/// Refuses a request without a valid key (401) when keys are required, or over its client's
/// rate (429); passes everything else on.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if OPEN_PATHS.contains(&req.path()) || req.path().starts_with(OPEN_PREFIX) {
        return next.call(req).await;
    }
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next.call(req).await;
    };
    let client = match &state.keys {
        None => Client::from_ip(req.peer_addr().map(|a| a.ip())),
        Some(keys) => {
            let Some(presented) = presented_key(req.headers()) else {
                return Err(ApiError::Unauthorized(
                    "an API key is required: send it as Authorization: Bearer <key> or X-API-Key: <key>"
                        .into(),
                )
                .into());
            };
            match keys.identify(presented) {
                Some(id) => Client::Key(id),
                None => {
                    tracing::info!(path = %crate::routes::shorten(req.path()), "request with an unknown API key refused");
                    return Err(ApiError::Unauthorized("the API key is not valid".into()).into());
                }
            }
        }
    };
    if let Some(rates) = &state.rates {
        if let Err(e) = rates.check(&client) {
            tracing::info!(?client, "rate limit reached");
            return Err(e.into());
        }
    }
    next.call(req).await
}
