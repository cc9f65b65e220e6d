//! `spawn_app()`: the real server on port 0, its own redis-server and storage directory, and a
//! unique key prefix, plus request helpers speaking the lab client's dialect.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};
use stemsep_common::config::{Backend, RedisArgs, StorageArgs};
use stemsep_common::job::{SongHash, Track};
use stemsep_common::queue::{Claim, Queue};
use stemsep_common::storage::{ObjectKey, Storage};
use stemsep_rest::auth::{ApiKeys, AuthMode};
use stemsep_rest::config::Settings;
use stemsep_rest::startup::Application;
use stemsep_testkit::{tone_mp3, unique_prefix, RedisServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running server and handles on everything behind it.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// The bound port.
    pub port: u16,
    /// The private Redis (stop/kill/start_again it to test outages).
    pub redis: RedisServer,
    /// The queue the server uses (same prefix).
    pub queue: Queue,
    /// The storage the server uses.
    pub storage: Arc<dyn Storage>,
    /// Holds the storage directory (`<dir>/storage`); removed on drop.
    pub dir: tempfile::TempDir,
    /// HTTP client.
    pub client: reqwest::Client,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// As `spawn_app`, after `tweak` adjusts the settings.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings {
        redis: RedisArgs {
            redis_url: redis.url(),
            key_prefix: unique_prefix("api"),
            lease_secs: 30,
            max_attempts: 3,
            retry_secs: 30,
            retention_secs: 0,
        },
        storage: StorageArgs {
            storage: Backend::Local,
            storage_dir: dir.path().join("storage"),
            gcs_bucket: String::new(),
            gcs_endpoint: String::new(),
        },
        bind: "127.0.0.1:0".into(),
        models: vec!["htdemucs".into(), "htdemucs_ft".into()],
        max_body_mib: 16,
        max_seconds: 1200,
        log_lines: 1000,
        http_workers: 1,
        auth: AuthMode::Off,
        api_keys: ApiKeys::default(),
        remove_by_get: true,
        rate_per_min: 0,
        rate_burst: 1,
        max_queue: 0,
        max_uploads: 4,
        upload_wait_secs: 30,
        bitrate: 320,
        renders: 2,
    };
    tweak(&mut settings);
    let app = Application::build(&settings).await.expect("server builds");
    let port = app.port();
    let queue = app.state().queue.clone();
    let storage = app.state().storage.clone();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        redis,
        queue,
        storage,
        dir,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    }
}

/// Base64 as Python's `base64.b64encode`.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A short real song, distinct per seed.
pub fn song(seed: u64) -> Vec<u8> {
    tone_mp3(220.0 + seed as f32, 1.0, seed)
}

/// The lab's songhash: SHA-224 hex of the MP3 bytes.
pub fn lab_hash(mp3: &[u8]) -> String {
    SongHash::compute(mp3, "htdemucs").to_string()
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Exactly what `sample-requests.py` sends: `requests.post(url, json={"mp3": ..., "callback":
    /// {...}})`, no model field.
    pub async fn post_like_lab_client(&self, mp3: &[u8]) -> reqwest::Response {
        let body = json!({
            "mp3": b64(mp3),
            "callback": {"url": "http://localhost:5000", "data": {"mp3": "song.mp3", "data": "to be returned"}},
        });
        self.client
            .post(self.url("/apiv1/separate"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// POST /apiv1/separate with an arbitrary JSON body.
    pub async fn post_json(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/apiv1/separate"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// POST /apiv1/separate with a raw body and content type application/json.
    pub async fn post_raw(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url("/apiv1/separate"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// What `sample-requests.py` does for the queue: a GET with the JSON body `null`.
    pub async fn get_queue_like_lab_client(&self) -> reqwest::Response {
        self.client
            .get(self.url("/apiv1/queue"))
            .header("content-type", "application/json")
            .body("null")
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client.delete(self.url(path)).send().await.unwrap()
    }

    /// `GET /apiv1/status/<hash>` as JSON.
    pub async fn status(&self, hash: &str) -> Value {
        self.get(&format!("/apiv1/status/{hash}"))
            .await
            .json()
            .await
            .unwrap()
    }

    /// Submits `mp3` and returns its hash.
    pub async fn submit(&self, mp3: &[u8]) -> String {
        let resp = self.post_like_lab_client(mp3).await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        body["hash"].as_str().unwrap().to_owned()
    }

    /// Plays a worker claiming the next queued job (which must exist).
    pub async fn claim_next(&self) -> Claim {
        let block = Duration::from_millis(500);
        let mut conn = self.queue.blocking_conn(block).await.unwrap();
        self.queue
            .claim(&mut conn, "test-worker", block)
            .await
            .unwrap()
            .expect("a queued job")
    }

    /// Plays a worker: claims the next job, stores its stems (distinct real MP3s; the lab's four
    /// unless the job names others) and marks it done. Returns the stems by track.
    pub async fn finish_next_job(&self) -> Vec<(Track, Vec<u8>)> {
        let claim = self.claim_next().await;
        self.finish(&claim).await
    }

    /// Plays the worker holding `claim`: stores the masters of the model's stems and the MP3 of
    /// each of the job's tracks, and marks the job done.
    pub async fn finish(&self, claim: &Claim) -> Vec<(Track, Vec<u8>)> {
        for (i, s) in claim.job.sources().into_iter().enumerate() {
            self.storage
                .put(
                    &ObjectKey::master(&claim.job.hash, &s),
                    Bytes::from(tone_master(100.0 * (i + 1) as f32)),
                )
                .await
                .unwrap();
        }
        let mut stems = Vec::new();
        for (i, t) in claim.job.tracks().into_iter().enumerate() {
            let bytes = tone_mp3(100.0 * (i + 1) as f32, 0.5, 1000 + i as u64);
            self.storage
                .put(
                    &ObjectKey::stem(&claim.job.hash, &t),
                    Bytes::from(bytes.clone()),
                )
                .await
                .unwrap();
            stems.push((t, bytes));
        }
        assert!(self
            .queue
            .complete(claim, &claim.job.sources())
            .await
            .unwrap());
        stems
    }

    /// A raw HTTP/1.1 GET with the path exactly as given (no client-side normalisation of `..`
    /// or percent-escapes). Returns the status and body.
    pub async fn raw_get(&self, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await.unwrap();
        let reply = String::from_utf8_lossy(&reply).into_owned();
        let status = reply
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = reply
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

/// Asserts a JSON error response with `status` and returns its message.
pub async fn expect_error(resp: reqwest::Response, status: u16) -> String {
    assert_eq!(resp.status(), status, "unexpected status");
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "errors are JSON"
    );
    let body: Value = resp.json().await.unwrap();
    let msg = body["error"].as_str().expect("an error field").to_owned();
    assert!(!msg.is_empty());
    msg
}

/// A stem's lossless master as the worker stores it: half a second of a sine at `freq_hz`.
pub fn tone_master(freq_hz: f32) -> Vec<u8> {
    let rate = 44_100;
    let sine: Vec<f32> = (0..rate / 2)
        .map(|i| 0.3 * (std::f32::consts::TAU * freq_hz * i as f32 / rate as f32).sin())
        .collect();
    let mut master = stemsep_audio::master_writer(rate).unwrap();
    master.push(&sine, &sine).unwrap();
    master.finish().unwrap()
}
