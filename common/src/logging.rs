//! Log lines to the Redis list `logging`, as the lab's log viewer expects them:
//! `<hostname>.<component>.<level>:<message>`, e.g. `web-7f9c.rest.info:POST /apiv1/separate 200`.
//!
//! [`RedisLogLayer`] is a `tracing` layer that formats each event of our own crates (targets
//! starting with `stemsep`) at debug level or above and hands it to a bounded channel with
//! `try_send`: the request path never waits for Redis. A background task ([`LogForwarder`])
//! drains the channel in batches with `LPUSH` + `LTRIM`, so the list stays bounded. When Redis is
//! down or the channel is full, lines are dropped and counted ([`LogStats::dropped`]); stderr
//! keeps every line either way.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::queue::Queue;

/// Lines kept in the `logging` list by default.
pub const DEFAULT_MAX_LINES: usize = 10_000;

/// Lines buffered in memory while the forwarder catches up; beyond this they are dropped.
const CHANNEL_CAPACITY: usize = 4096;

/// Pause after a failed write before the next attempt.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Lines sent to Redis in one `LPUSH`.
const BATCH: usize = 256;

/// Our own events: the forwarder must not log its own failures back into itself.
const SELF_TARGET: &str = module_path!();

/// Counters shared by the layer and its forwarder.
#[derive(Debug, Default)]
pub struct LogStats {
    sent: AtomicU64,
    dropped: AtomicU64,
}

impl LogStats {
    /// Lines written to Redis.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
    /// Lines lost because the channel was full or Redis was unreachable.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The `tracing` layer; build with [`RedisLogLayer::new`], which also returns the forwarder to
/// spawn. It ignores events from other crates itself; when composing it by hand, add
/// [`forwarded`] as its per-layer filter so other crates' debug callsites stay disabled.
#[derive(Debug)]
pub struct RedisLogLayer {
    tx: mpsc::Sender<String>,
    tag: String,
    stats: Arc<LogStats>,
}

/// The background half of [`RedisLogLayer`]: run [`LogForwarder::run`] on a tokio runtime.
pub struct LogForwarder {
    rx: mpsc::Receiver<String>,
    queue: Queue,
    max_lines: usize,
    stats: Arc<LogStats>,
}

impl std::fmt::Debug for LogForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogForwarder")
            .field("max_lines", &self.max_lines)
            .finish_non_exhaustive()
    }
}

impl RedisLogLayer {
    /// A layer tagging lines `<hostname>.<component>.<level>` and a forwarder writing them to the
    /// `logging` list of `queue`'s Redis, trimmed to the newest `max_lines` (at least 1).
    pub fn new(queue: Queue, component: &str, max_lines: usize) -> (Self, LogForwarder) {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        Self::with_host(queue, &host, component, max_lines)
    }

    /// As [`RedisLogLayer::new`] with an explicit host name (tests, containers with odd names).
    pub fn with_host(
        queue: Queue,
        host: &str,
        component: &str,
        max_lines: usize,
    ) -> (Self, LogForwarder) {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let stats = Arc::new(LogStats::default());
        let layer = RedisLogLayer {
            tx,
            tag: format!("{host}.{component}"),
            stats: stats.clone(),
        };
        let forwarder = LogForwarder {
            rx,
            queue,
            max_lines: max_lines.max(1),
            stats,
        };
        (layer, forwarder)
    }

    /// The counters of this layer.
    pub fn stats(&self) -> Arc<LogStats> {
        self.stats.clone()
    }
}

impl<S: Subscriber> Layer<S> for RedisLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if !forwarded(meta) {
            return;
        }
        let level = match *meta.level() {
            Level::ERROR => "error",
            Level::WARN => "warn",
            Level::INFO => "info",
            _ => "debug",
        };
        let mut text = LineVisitor::default();
        event.record(&mut text);
        let line = format!("{}.{level}:{}", self.tag, text.finish());
        if self.tx.try_send(line).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The events [`RedisLogLayer`] forwards: debug and above from our crates (targets starting with
/// `stemsep`), except the forwarder's own complaints about Redis.
pub fn forwarded(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() <= Level::DEBUG
        && meta.target().starts_with("stemsep")
        && !meta.target().starts_with(SELF_TARGET)
}

/// Renders `message` first, then the other fields as `key=value`.
#[derive(Default)]
struct LineVisitor {
    message: String,
    fields: String,
}

impl LineVisitor {
    fn finish(self) -> String {
        match (self.message.is_empty(), self.fields.is_empty()) {
            (_, true) => self.message,
            (true, false) => self.fields,
            (false, false) => format!("{} {}", self.message, self.fields),
        }
    }
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let sep = if self.fields.is_empty() { "" } else { " " };
            let _ = write!(self.fields, "{sep}{}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let sep = if self.fields.is_empty() { "" } else { " " };
            let _ = write!(self.fields, "{sep}{}={value:?}", field.name());
        }
    }
}

impl LogForwarder {
    /// Drains the channel into Redis until every layer handle is gone. Batches that cannot be
    /// written are dropped and counted; the next batch tries again (the queue reconnects lazily).
    pub async fn run(mut self) {
        let key = self.queue.keys().logging();
        let mut batch = Vec::with_capacity(BATCH);
        let mut redis_down = false;
        while self.rx.recv_many(&mut batch, BATCH).await > 0 {
            let n = batch.len() as u64;
            match self.push(&key, &batch).await {
                Ok(()) => {
                    self.stats.sent.fetch_add(n, Ordering::Relaxed);
                    if redis_down {
                        redis_down = false;
                        tracing::info!(target: SELF_TARGET, "log forwarding to Redis resumed");
                    }
                }
                Err(e) => {
                    self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                    if !redis_down {
                        redis_down = true;
                        tracing::warn!(target: SELF_TARGET, "log lines to Redis dropped: {e}");
                    }
                    // The backlog would only queue up behind a dead Redis: drop it now, and
                    // pause so an outage costs one failed attempt per pause, not one per line.
                    while self.rx.try_recv().is_ok() {
                        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
            batch.clear();
        }
    }

    async fn push(&self, key: &str, lines: &[String]) -> crate::Result<()> {
        let mut c = self.queue.conn().await?;
        // Oldest first into LPUSH, so the newest line ends at the head as with one LPUSH per line.
        let _: () = redis::pipe()
            .atomic()
            .lpush(key, lines)
            .ignore()
            .ltrim(key, 0, self.max_lines as isize - 1)
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok(())
    }
}

/// Installs the process-wide subscriber both binaries use: human-readable lines on stderr,
/// filtered by `RUST_LOG` (default `info`), plus the Redis `logging` list for `component`
/// (`"rest"` or `"worker"`), bounded to `max_lines`. Spawns the forwarder on the current tokio
/// runtime, so call it from inside one. Returns the forwarding counters.
pub fn init(queue: Queue, component: &str, max_lines: usize) -> Arc<LogStats> {
    let (layer, forwarder) = RedisLogLayer::new(queue, component, max_lines);
    let stats = layer.stats();
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
    // A per-layer filter (not `Layer::enabled`, which would filter stderr too) keeps other
    // crates' debug and trace callsites disabled for this layer.
    let layer = layer.with_filter(tracing_subscriber::filter::filter_fn(forwarded));
    tracing_subscriber::registry()
        .with(stderr)
        .with(layer)
        .init();
    tokio::spawn(forwarder.run());
    stats
}
