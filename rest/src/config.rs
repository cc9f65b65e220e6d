//! Command-line flags and `STEMSEP_*` environment variables of `stemsep-rest`.

use stemsep_common::config::{RedisArgs, StorageArgs};
use stemsep_common::logging::DEFAULT_MAX_LINES;

/// Everything the server needs, parsed once at start-up.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "stemsep-rest",
    version,
    about = "stemsep HTTP API (lab-compatible)"
)]
pub struct Settings {
    /// Redis connection and queue behaviour.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Object storage backend.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Address to listen on (`host:port`; port 0 picks a free one).
    #[arg(long, env = "STEMSEP_BIND", default_value = "0.0.0.0:5000")]
    pub bind: String,
    /// Model names clients may ask for (comma-separated). Empty (the default): every model the
    /// workers announce. Requests without `model` get `htdemucs`.
    #[arg(
        long,
        env = "STEMSEP_MODELS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub models: Vec<String>,
    /// Largest accepted request body, MiB (the lab's ingress allows 16).
    #[arg(long, env = "STEMSEP_MAX_BODY_MIB", default_value_t = 16)]
    pub max_body_mib: usize,
    /// Longest accepted song, seconds.
    #[arg(long, env = "STEMSEP_MAX_SECONDS", default_value_t = 1200)]
    pub max_seconds: u64,
    /// Lines kept in the Redis list `logging`.
    #[arg(long, env = "STEMSEP_LOG_LINES", default_value_t = DEFAULT_MAX_LINES)]
    pub log_lines: usize,
    /// HTTP worker threads (request handling is I/O-bound; MP3 checks run on a blocking pool).
    #[arg(long, env = "STEMSEP_HTTP_WORKERS", default_value_t = 2)]
    pub http_workers: usize,
}

impl Settings {
    /// The body limit in bytes.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_mib.max(1) * 1024 * 1024
    }
}
