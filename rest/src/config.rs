//! Command-line flags and `STEMSEP_*` environment variables of `stemsep-rest`.

use stemsep_common::config::{RedisArgs, StorageArgs};
use stemsep_common::logging::DEFAULT_MAX_LINES;

use crate::auth::{ApiKeys, AuthMode};

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
    #[arg(long, env = "STEMSEP_MAX_BODY_MIB", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub max_body_mib: u64,
    /// Longest accepted song, seconds.
    #[arg(long, env = "STEMSEP_MAX_SECONDS", default_value_t = 1200)]
    pub max_seconds: u64,
    /// Lines kept in the Redis list `logging`.
    #[arg(long, env = "STEMSEP_LOG_LINES", default_value_t = DEFAULT_MAX_LINES)]
    pub log_lines: usize,
    /// HTTP worker threads (request handling is I/O-bound; JSON, base64, hashing and audio
    /// checks run on a blocking pool).
    #[arg(long, env = "STEMSEP_HTTP_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub http_workers: u64,
    /// `off`: anyone may call the API; `keys`: every route but `/`, `/healthz` and `/metrics`
    /// needs one of `--api-keys` (`Authorization: Bearer <key>` or `X-API-Key: <key>`).
    #[arg(long, env = "STEMSEP_AUTH", value_enum, default_value = "off")]
    pub auth: AuthMode,
    /// Accepted API keys, comma-separated, each at least 16 characters (from a Secret).
    #[arg(
        long,
        env = "STEMSEP_API_KEYS",
        default_value = "",
        hide_env_values = true
    )]
    pub api_keys: ApiKeys,
    /// Whether `GET /apiv1/remove/...` removes a stem as the lab's does (`DELETE` always does);
    /// `false` answers GET with 405, so a link cannot delete anything.
    #[arg(long, env = "STEMSEP_REMOVE_BY_GET", default_value_t = true, action = clap::ArgAction::Set)]
    pub remove_by_get: bool,
    /// Requests a minute one client may make (per API key, or per IP address when keys are
    /// off), sustained; 0 for no limit.
    #[arg(long, env = "STEMSEP_RATE_PER_MIN", default_value_t = 600)]
    pub rate_per_min: u32,
    /// Requests one client may make at once beyond its sustained rate.
    #[arg(long, env = "STEMSEP_RATE_BURST", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_burst: u32,
    /// Most songs waiting for a worker (queued or waiting out a retry back-off) before new
    /// submissions get 503; 0 for no limit.
    #[arg(long, env = "STEMSEP_MAX_QUEUE", default_value_t = 1000)]
    pub max_queue: u64,
    /// Uploads read and checked at once (each holds up to three copies of its body in memory).
    #[arg(long, env = "STEMSEP_MAX_UPLOADS", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub max_uploads: u64,
    /// Seconds an upload waits for one of those slots before it gets 503.
    #[arg(long, env = "STEMSEP_UPLOAD_WAIT_SECS", default_value_t = 30)]
    pub upload_wait_secs: u64,
    /// MP3 bitrate of a job's files when its request names none, kbit/s.
    #[arg(long, env = "STEMSEP_BITRATE", default_value_t = 320)]
    pub bitrate: u32,
    /// Files made from a job's masters at once (another format, bitrate or a `no_<stem>` mix,
    /// on first download); each holds its mix, one compressed master and the file in memory,
    /// about 45 MB per minute of song at most.
    #[arg(long, env = "STEMSEP_RENDERS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub renders: u64,
}

impl Settings {
    /// The body limit in bytes.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_mib as usize * 1024 * 1024
    }

    /// Checks what the parser cannot check alone; the message says which setting is wrong.
    pub fn validate(&self) -> Result<(), String> {
        self.api_keys.check()?;
        if self.auth == AuthMode::Keys && self.api_keys.is_empty() {
            return Err(
                "STEMSEP_AUTH is keys but STEMSEP_API_KEYS holds no key: every request would be refused"
                    .into(),
            );
        }
        if !stemsep_audio::BITRATES_KBPS.contains(&self.bitrate) {
            return Err(format!(
                "STEMSEP_BITRATE: {} kbit/s is not one LAME encodes ({:?})",
                self.bitrate,
                stemsep_audio::BITRATES_KBPS
            ));
        }
        if let Some(bad) = self.model_names().iter().find(|m| !plain_name(m)) {
            return Err(format!(
                "STEMSEP_MODELS: {bad:?} is not a model name (letters, digits, '_' and '-', at most 64)"
            ));
        }
        Ok(())
    }

    /// The model names offered, trimmed, blanks dropped.
    pub fn model_names(&self) -> Vec<String> {
        self.models
            .iter()
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .collect()
    }
}

/// A model name the worker can look up as a file: `[A-Za-z0-9_-]{1,64}`.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let mut all = vec!["stemsep-rest"];
        all.extend_from_slice(args);
        let s = Settings::try_parse_from(all).map_err(|e| e.to_string())?;
        s.validate().map(|()| s)
    }

    #[test]
    fn defaults_keep_the_lab_working() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.auth, AuthMode::Off);
        assert!(s.remove_by_get);
        assert_eq!(s.max_body_bytes(), 16 << 20);
    }

    #[test]
    fn bad_values_are_refused_with_their_name() {
        let e = parse(&["--auth", "keys"]).unwrap_err();
        assert!(e.contains("STEMSEP_API_KEYS"), "{e}");
        let e = parse(&["--auth", "keys", "--api-keys", "short"]).unwrap_err();
        assert!(e.contains("16"), "{e}");
        assert!(parse(&["--auth", "keys", "--api-keys", "0123456789abcdef"]).is_ok());
        let e = parse(&["--models", "../x"]).unwrap_err();
        assert!(e.contains("STEMSEP_MODELS"), "{e}");
        for bad in [
            &["--max-body-mib", "0"][..],
            &["--http-workers", "0"],
            &["--rate-burst", "0"],
            &["--max-uploads", "0"],
            &["--remove-by-get", "maybe"],
            &["--auth", "password"],
            &["--lease-secs", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
