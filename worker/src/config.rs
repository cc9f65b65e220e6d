//! The worker's command line (every flag also an `STEMSEP_*` environment variable), parsed once
//! and validated into [`RunnerConfig`].

use std::path::PathBuf;
use std::time::Duration;

use stemsep_common::config::{RedisArgs, StorageArgs};
use url::Url;

use crate::callback::{Allowlist, CallbackSettings};
use crate::error::Error;

/// `stemsep-worker`: claims songs from the queue and separates them into four stems.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "stemsep-worker", version, about)]
pub struct WorkerArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub redis: RedisArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub storage: StorageArgs,
    /// Directory of the models a job may name: `<name>/manifest.json` with its members, or a single
    /// `<name>.onnx` with its sidecar JSON; every model found is served.
    #[arg(long, env = "STEMSEP_MODEL_DIR", default_value = "data/models")]
    pub model_dir: PathBuf,
    /// Longest song separated, in seconds; longer ones fail with a reason.
    #[arg(long, env = "STEMSEP_MAX_SECONDS", default_value_t = 1200)]
    pub max_seconds: u64,
    /// Comma-separated host names and IP networks (`127.0.0.1`, `10.0.0.0/8`) that callbacks may
    /// reach although they are not public.
    #[arg(
        long,
        env = "STEMSEP_CALLBACK_ALLOW",
        value_delimiter = ',',
        default_value = ""
    )]
    pub callback_allow: Vec<String>,
    /// Seconds one callback try may take.
    #[arg(long, env = "STEMSEP_CALLBACK_TIMEOUT_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub callback_timeout_secs: u64,
    /// Base URL clients download stems from; callbacks carry `<base>/apiv1/track/<hash>/<track>.mp3`.
    #[arg(
        long,
        env = "STEMSEP_PUBLIC_URL",
        default_value = "http://localhost:5000"
    )]
    pub public_url: Url,
    /// Address of the Prometheus `/metrics` endpoint; empty to serve none.
    #[arg(long, env = "STEMSEP_METRICS_BIND", default_value = "0.0.0.0:9100")]
    pub metrics_bind: String,
    /// This worker's name in leases and logs (default: `<hostname>-<pid>`).
    #[arg(long, env = "STEMSEP_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Seconds a running job may take to finish after SIGTERM before it is handed back.
    #[arg(long, env = "STEMSEP_GRACE_SECS", default_value_t = 20)]
    pub grace_secs: u64,
    /// Seconds one claim waits on an empty queue (also how soon a stop request is noticed).
    #[arg(long, env = "STEMSEP_CLAIM_BLOCK_SECS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=30))]
    pub claim_block_secs: u64,
}

/// How a job's song is read and its stems written.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOptions {
    /// Longest song accepted.
    pub max_duration: Duration,
}

/// The validated settings the runner works with.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Lease holder name.
    pub worker_id: String,
    /// Where `<model>.onnx` files are.
    pub model_dir: PathBuf,
    /// How every job's song is read and its stems written.
    pub separate: JobOptions,
    /// How long one claim blocks on an empty queue.
    pub claim_block: Duration,
    /// How long a running job may go on after a stop request.
    pub grace: Duration,
    /// Callback delivery settings.
    pub callback: CallbackSettings,
}

impl WorkerArgs {
    /// Validates the arguments into the runner's settings: a value that would fail every job
    /// (a model directory that is not there, a callback URL that is not http) is refused here,
    /// so the worker stops at start-up with the reason.
    pub fn runner_config(&self) -> Result<RunnerConfig, Error> {
        if !self.model_dir.is_dir() {
            return Err(Error::Config(format!(
                "model directory {} does not exist (STEMSEP_MODEL_DIR)",
                self.model_dir.display()
            )));
        }
        if !matches!(self.public_url.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "public URL {} is not http(s)",
                self.public_url
            )));
        }
        let worker_id = match &self.worker_id {
            Some(id) if !id.trim().is_empty() => id.trim().to_owned(),
            _ => format!(
                "{}-{}",
                gethostname::gethostname().to_string_lossy(),
                std::process::id()
            ),
        };
        Ok(RunnerConfig {
            worker_id,
            model_dir: self.model_dir.clone(),
            separate: JobOptions {
                max_duration: Duration::from_secs(self.max_seconds),
            },
            claim_block: Duration::from_secs(self.claim_block_secs),
            grace: Duration::from_secs(self.grace_secs),
            callback: CallbackSettings {
                allow: Allowlist::parse(&self.callback_allow)?,
                public_url: self.public_url.clone(),
                timeout: Duration::from_secs(self.callback_timeout_secs),
                tries: 3,
                backoff: Duration::from_millis(500),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The arguments with `--model-dir` pointing at a directory that exists.
    fn parse(args: &[&str]) -> WorkerArgs {
        let dir = std::env::temp_dir();
        let mut all = vec!["stemsep-worker", "--model-dir", dir.to_str().unwrap()];
        all.extend_from_slice(args);
        WorkerArgs::try_parse_from(all).unwrap()
    }

    #[test]
    fn defaults_and_flags() {
        let a = parse(&[]);
        let c = a.runner_config().unwrap();
        assert_eq!(c.separate.max_duration, Duration::from_secs(1200));
        assert!(c.worker_id.ends_with(&format!("-{}", std::process::id())));
        assert_eq!(c.callback.allow, Allowlist::default());
        let a = parse(&[
            "--callback-allow",
            "127.0.0.1,10.0.0.0/8",
            "--worker-id",
            "w1",
        ]);
        let c = a.runner_config().unwrap();
        assert_eq!(c.worker_id, "w1");
        assert_eq!(
            c.callback.allow,
            Allowlist::parse(&["127.0.0.1", "10.0.0.0/8"]).unwrap()
        );
        assert!(parse(&["--callback-allow", "a b"]).runner_config().is_err());
        let e = WorkerArgs::try_parse_from(["stemsep-worker", "--model-dir", "/nonexistent"])
            .unwrap()
            .runner_config()
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent"), "{e}");
        // Out-of-range numbers are refused by the parser itself.
        for bad in [
            &["--lease-secs", "0"][..],
            &["--max-attempts", "0"],
            &["--claim-block-secs", "0"],
            &["--callback-timeout-secs", "0"],
            &["--retry-secs", "0"],
        ] {
            let mut all = vec!["stemsep-worker"];
            all.extend_from_slice(bad);
            assert!(WorkerArgs::try_parse_from(all).is_err(), "{bad:?}");
        }
    }
}
