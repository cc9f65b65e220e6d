//! Shared by the runner and end-to-end tests: a private Redis, local storage, the committed tiny
//! model installed as the default `htdemucs`, worker (and rest) processes, a callback listener.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stemsep_common::job::{Callback, Job, JobState, SongHash, Track, DEFAULT_MODEL};
use stemsep_common::queue::{Queue, QueueSettings};
use stemsep_common::storage::{LocalStorage, ObjectKey, Storage};
use stemsep_testkit::{free_port, unique_prefix, RedisServer};

/// The process-level tests each start several CPU-hungry processes on a 2-core machine; running
/// them one at a time keeps leases and timings meaningful.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Generous bound for anything the tests wait for; they normally take a few seconds.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// A private Redis, a storage directory and a model directory, plus the processes started on them.
pub struct Env {
    pub redis: RedisServer,
    pub prefix: String,
    pub dir: tempfile::TempDir,
    pub queue: Queue,
    pub storage: LocalStorage,
    pub lease_secs: u64,
    pub max_attempts: u32,
    procs: Vec<Proc>,
}

/// A child process whose stderr goes to a log file.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    pub metrics_port: u16,
}

impl Proc {
    /// The log written so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many times the log says `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log_text().matches(needle).count()
    }

    /// SIGTERM (graceful stop).
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// SIGSTOP: the process freezes mid-whatever, as a VM pause, a long GC or a partition would
    /// leave it, and its leases lapse.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// SIGCONT: a frozen process goes on where it was.
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(ok.success());
    }

    /// SIGKILL, as the OOM killer or a node loss would.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One counter of the worker's `/metrics`, 0 if absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let body = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await
            .expect("metrics endpoint answers")
            .text()
            .await
            .unwrap();
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(' '))
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.trim().parse::<f64>().unwrap())
            .sum()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Env {
    /// Starts Redis and prepares directories; `lease_secs` and `max_attempts` configure every
    /// process started later.
    pub async fn new(label: &str, lease_secs: u64, max_attempts: u32) -> Env {
        let redis = RedisServer::start().expect("redis-server starts");
        let prefix = unique_prefix(label);
        let dir = tempfile::Builder::new()
            .prefix("stemsep-runner-")
            .tempdir()
            .unwrap();
        let models = dir.path().join("models");
        fs::create_dir_all(&models).unwrap();
        let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/tiny");
        // Jobs without a model field name the default; the tiny model stands in for it.
        std::os::unix::fs::symlink(
            tiny.join("tiny.onnx"),
            models.join(format!("{DEFAULT_MODEL}.onnx")),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            tiny.join("tiny.onnx.json"),
            models.join(format!("{DEFAULT_MODEL}.onnx.json")),
        )
        .unwrap();
        fs::create_dir_all(dir.path().join("storage")).unwrap();
        let storage = LocalStorage::new(dir.path().join("storage")).unwrap();
        let queue = Queue::new(QueueSettings {
            url: redis.url(),
            prefix: prefix.clone(),
            lease: Duration::from_secs(lease_secs),
            max_attempts,
            ..QueueSettings::default()
        })
        .unwrap();
        Env {
            redis,
            prefix,
            dir,
            queue,
            storage,
            lease_secs,
            max_attempts,
            procs: Vec::new(),
        }
    }

    pub fn model_dir(&self) -> PathBuf {
        self.dir.path().join("models")
    }

    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The environment shared by the worker and rest processes.
    pub fn common_env(&self) -> Vec<(String, String)> {
        [
            ("STEMSEP_REDIS_URL", self.redis.url()),
            ("STEMSEP_KEY_PREFIX", self.prefix.clone()),
            ("STEMSEP_LEASE_SECS", self.lease_secs.to_string()),
            ("STEMSEP_MAX_ATTEMPTS", self.max_attempts.to_string()),
            ("STEMSEP_STORAGE", "local".into()),
            (
                "STEMSEP_STORAGE_DIR",
                self.storage_dir().display().to_string(),
            ),
            ("STEMSEP_MODEL_DIR", self.model_dir().display().to_string()),
            // Transient failures come back after a second, not half a minute.
            ("STEMSEP_RETRY_SECS", "1".into()),
            ("RUST_LOG", "info".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Installs the model at `source` (a model directory, or a `.onnx` with its sidecar) as
    /// `name` in the workers' model directory.
    pub fn install_model(&self, name: &str, source: &Path) {
        let models = self.model_dir();
        if source.is_dir() {
            std::os::unix::fs::symlink(source, models.join(name)).unwrap();
        } else {
            std::os::unix::fs::symlink(source, models.join(format!("{name}.onnx"))).unwrap();
            let mut sidecar = source.as_os_str().to_owned();
            sidecar.push(".json");
            std::os::unix::fs::symlink(sidecar, models.join(format!("{name}.onnx.json"))).unwrap();
        }
    }

    /// Starts `stemsep-rest` on a free port with extra `STEMSEP_*` settings and waits until
    /// `GET /` answers; returns its base URL.
    pub async fn spawn_rest(&mut self, extra: &[(&str, &str)]) -> String {
        let port = free_port();
        let mut vars = self.common_env();
        vars.push(("STEMSEP_BIND".into(), format!("127.0.0.1:{port}")));
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.spawn("rest", &rest_binary(), vars, port);
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reqwest::get(&base)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                Instant::now() < deadline,
                "rest never answered\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        base
    }

    /// Starts a `stemsep-worker` named `id` with extra `STEMSEP_*` settings; returns its index.
    pub fn spawn_worker(&mut self, id: &str, extra: &[(&str, &str)]) -> usize {
        let port = free_port();
        let mut env = self.common_env();
        env.push(("STEMSEP_WORKER_ID".into(), id.into()));
        env.push(("STEMSEP_METRICS_BIND".into(), format!("127.0.0.1:{port}")));
        env.push(("STEMSEP_CLAIM_BLOCK_SECS".into(), "1".into()));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.spawn(
            id,
            Path::new(env!("CARGO_BIN_EXE_stemsep-worker")),
            env,
            port,
        )
    }

    /// Starts any binary with the given environment; returns its index.
    pub fn spawn(
        &mut self,
        name: &str,
        bin: &Path,
        env: Vec<(String, String)>,
        port: u16,
    ) -> usize {
        let log = self.dir.path().join(format!("{name}.log"));
        let file = fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        self.procs.push(Proc {
            name: name.into(),
            child,
            log,
            metrics_port: port,
        });
        self.procs.len() - 1
    }

    pub fn proc(&mut self, i: usize) -> &mut Proc {
        &mut self.procs[i]
    }

    pub fn procs(&self) -> &[Proc] {
        &self.procs
    }

    /// Every log, for assertion messages.
    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .map(|p| format!("--- {} ---\n{}", p.name, p.log_text()))
            .collect()
    }

    /// Waits until process `i` has logged `needle`.
    pub async fn wait_log(&self, i: usize, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.procs[i].log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stores `mp3` as an upload and enqueues its job, as the rest API would.
    pub async fn submit(&self, mp3: &[u8], callback: Option<Callback>) -> SongHash {
        self.submit_as(mp3, DEFAULT_MODEL, callback, false).await
    }

    /// Stores `mp3` as a new upload and enqueues its job for `model`; `replace` resubmits a
    /// finished one, as the rest API does for a failed job.
    pub async fn submit_as(
        &self,
        mp3: &[u8],
        model: &str,
        callback: Option<Callback>,
        replace: bool,
    ) -> SongHash {
        let hash = SongHash::compute(mp3, model);
        let job = Job::new(hash.clone(), model.into(), callback);
        self.storage
            .put(&ObjectKey::input(&job), mp3.to_vec().into())
            .await
            .unwrap();
        self.queue.enqueue(&job, replace).await.unwrap();
        hash
    }

    /// The job record; Redis errors (a restart in progress) read as `None`.
    pub async fn job(&self, hash: &SongHash) -> Option<Job> {
        self.queue.job(hash).await.ok().flatten()
    }

    /// Waits until `pred` holds for the job record.
    pub async fn wait_job(&self, hash: &SongHash, what: &str, pred: impl Fn(&Job) -> bool) -> Job {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(j) = self.job(hash).await {
                if pred(&j) {
                    return j;
                }
            }
            assert!(
                Instant::now() < deadline,
                "job {hash} never became {what}; last {:?}\n{}",
                self.job(hash).await,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `pred` (which may look at Redis, storage, logs) holds.
    pub async fn eventually<F, Fut>(&self, what: &str, mut pred: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + PATIENCE;
        while !pred().await {
            assert!(Instant::now() < deadline, "never: {what}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every job is in a final state; returns them.
    pub async fn wait_all_final(&self, hashes: &[SongHash]) -> Vec<Job> {
        let mut out = Vec::new();
        for h in hashes {
            out.push(
                self.wait_job(h, "done or failed", |j| {
                    matches!(j.state, JobState::Done | JobState::Failed)
                })
                .await,
            );
        }
        out
    }

    /// Every stem of `hash` is in storage.
    pub async fn stems_present(&self, hash: &SongHash) -> bool {
        for t in Track::lab() {
            if !self
                .storage
                .exists(&ObjectKey::stem(hash, &t))
                .await
                .unwrap()
            {
                return false;
            }
        }
        true
    }

    /// Lengths of toWorker, processing and the dead-letter list.
    pub async fn depths(&self) -> (u64, u64, u64) {
        self.queue.depths().await.unwrap()
    }
}

/// The rest binary built alongside this crate's binaries (`cargo build --workspace --bins`).
pub fn rest_binary() -> PathBuf {
    let worker = PathBuf::from(env!("CARGO_BIN_EXE_stemsep-worker"));
    let rest = worker.with_file_name("stemsep-rest");
    assert!(
        rest.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first",
        rest.display()
    );
    rest
}

/// Decodes a whole MP3 as the worker does; returns its length in seconds (frames / rate).
pub fn mp3_seconds(bytes: &[u8]) -> f64 {
    stemsep_audio::decode(bytes, std::time::Duration::from_secs(3600))
        .expect("the stem decodes")
        .seconds()
}

/// The listener's address. Not 127.0.0.1: allowing it must not also allow `localhost`, the stock
/// lab client's callback, which stays refused (Linux routes all of 127/8 to loopback).
pub const LISTENER_IP: &str = "127.0.0.2";

/// An HTTP server on [`LISTENER_IP`] recording every JSON body POSTed to it.
pub struct Listener {
    pub url: String,
    pub bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    handle: actix_web::dev::ServerHandle,
}

impl Listener {
    pub async fn start() -> Listener {
        use actix_web::{web, App, HttpResponse, HttpServer};
        let bodies: Arc<Mutex<Vec<serde_json::Value>>> = Default::default();
        let data = web::Data::new(bodies.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::post().to(
                    |d: web::Data<Arc<Mutex<Vec<serde_json::Value>>>>,
                     body: web::Json<serde_json::Value>| async move {
                        d.lock().unwrap().push(body.into_inner());
                        HttpResponse::Ok().finish()
                    },
                ))
        })
        .workers(1)
        .disable_signals()
        .bind((LISTENER_IP, 0))
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Listener {
            url: format!("http://{LISTENER_IP}:{port}/hook"),
            bodies,
            handle,
        }
    }

    /// The bodies received so far, by `hash`.
    pub fn by_hash(&self) -> HashMap<String, Vec<serde_json::Value>> {
        let mut m: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
        for b in self.bodies.lock().unwrap().iter() {
            m.entry(b["hash"].as_str().unwrap_or_default().to_owned())
                .or_default()
                .push(b.clone());
        }
        m
    }

    /// Waits until a body for each of `hashes` arrived.
    pub async fn wait_for(&self, hashes: &[SongHash]) -> HashMap<String, Vec<serde_json::Value>> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = self.by_hash();
            if hashes.iter().all(|h| got.contains_key(h.as_str())) {
                return got;
            }
            assert!(Instant::now() < deadline, "callbacks missing; got {got:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}
