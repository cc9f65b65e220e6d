//! What every handler reaches through `web::Data<AppState>`.

use std::sync::Arc;

use stemsep_common::queue::Queue;
use stemsep_common::storage::Storage;

use crate::auth::ApiKeys;
use crate::limits::{Gate, RateLimits};
use crate::metrics::Metrics;
use crate::routes::page::Page;

/// Shared handles; cloning is cheap.
#[derive(Clone)]
pub struct AppState {
    /// The Redis job queue (reconnects by itself).
    pub queue: Queue,
    /// Where inputs and stems live.
    pub storage: Arc<dyn Storage>,
    /// Model names a client may request; empty for every model the workers announce.
    pub models: Arc<[String]>,
    /// Longest accepted song, seconds.
    pub max_seconds: u64,
    /// Largest accepted request body, bytes.
    pub max_body: usize,
    /// The accepted API keys; `None` when authentication is off.
    pub keys: Option<Arc<ApiKeys>>,
    /// Requests per client; `None` for no limit.
    pub rates: Option<Arc<RateLimits>>,
    /// Uploads read and checked at once.
    pub uploads: Gate,
    /// Files made from masters at once.
    pub renders: Gate,
    /// MP3 bitrate of jobs whose request names none, kbit/s.
    pub bitrate: u32,
    /// The API's Prometheus instruments.
    pub metrics: Metrics,
    /// The web page, rendered at start-up.
    pub page: Page,
}
