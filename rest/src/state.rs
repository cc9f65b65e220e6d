//! What every handler reaches through `web::Data<AppState>`.

use std::sync::Arc;

use stemsep_common::queue::Queue;
use stemsep_common::storage::Storage;

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
    pub models: Vec<String>,
    /// Longest accepted song, seconds.
    pub max_seconds: u64,
    /// The API's Prometheus instruments.
    pub metrics: Metrics,
    /// The web page, rendered at start-up.
    pub page: Page,
}
