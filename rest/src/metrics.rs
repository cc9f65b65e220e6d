//! Prometheus metrics of the API, in a registry owned by the application (no process globals, so
//! several servers in one test process keep separate counts).

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The API's instruments.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    submissions: IntCounterVec,
    queue_depth: IntGaugeVec,
    redis_up: IntGauge,
    uploads: IntGauge,
}

impl Metrics {
    /// Fresh instruments in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "stemsep_http_requests_total",
                "HTTP requests by route pattern, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "stemsep_http_request_duration_seconds",
                "HTTP request latency, seconds",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["route", "method"],
        )
        .expect("valid metric");
        let submissions = IntCounterVec::new(
            Opts::new("stemsep_submissions_total", "POST /apiv1/separate outcomes"),
            &["outcome"],
        )
        .expect("valid metric");
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "stemsep_queue_depth",
                "Jobs per Redis list, read at scrape time",
            ),
            &["list"],
        )
        .expect("valid metric");
        let redis_up = IntGauge::new("stemsep_redis_up", "1 if Redis answered at the last scrape")
            .expect("valid metric");
        let uploads = IntGauge::new(
            "stemsep_uploads_in_flight",
            "Uploads being read and checked, read at scrape time",
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(submissions.clone()),
            Box::new(queue_depth.clone()),
            Box::new(redis_up.clone()),
            Box::new(uploads.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            latency,
            submissions,
            queue_depth,
            redis_up,
            uploads,
        }
    }

    /// Counts one finished request; `route` is the matched pattern (never the raw path, whose
    /// hashes would explode the label set).
    pub fn observe_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.latency
            .with_label_values(&[route, method])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one submission outcome (`enqueued`, `already_queued`, `rejected_*`, ...).
    pub fn submission(&self, outcome: &str) {
        self.submissions.with_label_values(&[outcome]).inc();
    }

    /// Records queue lengths (`toWorker`, `processing`, dead letters, the delayed set), or Redis
    /// being down.
    pub fn set_queue(&self, depths: Option<((u64, u64, u64), u64)>) {
        match depths {
            Some(((waiting, processing, dead), delayed)) => {
                self.redis_up.set(1);
                for (list, n) in [
                    ("waiting", waiting),
                    ("processing", processing),
                    ("dead", dead),
                    ("delayed", delayed),
                ] {
                    self.queue_depth.with_label_values(&[list]).set(n as i64);
                }
            }
            None => self.redis_up.set(0),
        }
    }

    /// Records how many uploads hold a slot of the upload gate.
    pub fn set_uploads(&self, n: usize) {
        self.uploads.set(n as i64);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
