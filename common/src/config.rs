//! Configuration shared by the binaries: clap argument groups, every flag also read from a
//! `STEMSEP_*` environment variable. Each binary flattens the groups it needs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::queue::{Queue, QueueSettings};
use crate::storage::{GcsStorage, LocalStorage, Storage};
use crate::Result;

/// Where Redis is and how the queue behaves.
#[derive(Debug, Clone, clap::Args)]
pub struct RedisArgs {
    /// Redis URL.
    #[arg(
        long,
        env = "STEMSEP_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    /// Prefix for every Redis key (empty: the lab's bare `toWorker` and `logging`).
    #[arg(long, env = "STEMSEP_KEY_PREFIX", default_value = "")]
    pub key_prefix: String,
    /// Seconds a worker may stay silent before it loses its lease; a job lease-less for as long
    /// again goes to another worker.
    #[arg(long, env = "STEMSEP_LEASE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease_secs: u64,
    /// Claims after which a job is marked failed and dead-lettered.
    #[arg(long, env = "STEMSEP_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// Seconds a job waits before its retry after a transient failure (storage or model
    /// unavailable), doubled for each further attempt up to an hour.
    #[arg(long, env = "STEMSEP_RETRY_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub retry_secs: u64,
    /// Seconds a finished job is kept — its record, stems and dead letter — before it is deleted;
    /// 0 keeps everything.
    #[arg(long, env = "STEMSEP_RETENTION_SECS", default_value_t = 604800)]
    pub retention_secs: u64,
}

impl RedisArgs {
    /// The queue settings these arguments describe.
    pub fn queue_settings(&self) -> QueueSettings {
        QueueSettings {
            url: self.redis_url.clone(),
            prefix: self.key_prefix.clone(),
            lease: Duration::from_secs(self.lease_secs),
            max_attempts: self.max_attempts,
            retry_backoff: Duration::from_secs(self.retry_secs),
            retention: (self.retention_secs > 0).then(|| Duration::from_secs(self.retention_secs)),
            ..QueueSettings::default()
        }
    }

    /// The queue these arguments describe (connects lazily).
    pub fn queue(&self) -> Result<Queue> {
        Queue::new(self.queue_settings())
    }
}

/// Which storage backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Files under `--storage-dir`.
    Local,
    /// A Google Cloud Storage bucket.
    Gcs,
}

/// Where stems and inputs are stored.
#[derive(Debug, Clone, clap::Args)]
pub struct StorageArgs {
    /// Storage backend.
    #[arg(long, env = "STEMSEP_STORAGE", value_enum, default_value = "local")]
    pub storage: Backend,
    /// Root directory of the local backend.
    #[arg(long, env = "STEMSEP_STORAGE_DIR", default_value = "data/storage")]
    pub storage_dir: PathBuf,
    /// GCS bucket name (gcs backend).
    #[arg(long, env = "STEMSEP_GCS_BUCKET", default_value = "")]
    pub gcs_bucket: String,
    /// GCS endpoint override, e.g. a fake-gcs-server at `http://127.0.0.1:4443`; credentials are
    /// then anonymous. Empty: the real service with Application Default Credentials (Workload
    /// Identity on GKE).
    #[arg(long, env = "STEMSEP_GCS_ENDPOINT", default_value = "")]
    pub gcs_endpoint: String,
}

impl StorageArgs {
    /// The backend these arguments describe.
    pub async fn storage(&self) -> Result<Arc<dyn Storage>> {
        Ok(match self.storage {
            Backend::Local => Arc::new(LocalStorage::new(&self.storage_dir)?),
            Backend::Gcs => Arc::new(
                GcsStorage::new(
                    &self.gcs_bucket,
                    (!self.gcs_endpoint.is_empty()).then_some(self.gcs_endpoint.as_str()),
                )
                .await?,
            ),
        })
    }
}
