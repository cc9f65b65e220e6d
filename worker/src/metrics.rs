//! Prometheus metrics of one worker process, and the tiny HTTP server that exposes them on
//! `/metrics` in the text format.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::error::Error;

/// Every metric the worker exports, registered in its own registry.
pub struct Metrics {
    registry: Registry,
    /// Jobs claimed from `toWorker`.
    pub jobs_claimed: IntCounter,
    /// Jobs whose four stems were stored and which were acknowledged.
    pub jobs_done: IntCounter,
    /// Failed attempts (each retried or dead-lettered one).
    pub jobs_failed: IntCounter,
    /// Failed attempts queued for another try after a back-off.
    pub jobs_retried: IntCounter,
    /// Jobs moved to the dead-letter list after their last attempt.
    pub jobs_dead: IntCounter,
    /// Jobs handed back unfinished at shutdown.
    pub jobs_released: IntCounter,
    /// Attempts abandoned or not acknowledged because the job was no longer this worker's.
    pub jobs_lost: IntCounter,
    /// Finished jobs deleted at the end of their retention.
    pub jobs_expired: IntCounter,
    /// Jobs the reaper of this process took from dead workers, by outcome (`requeued`, `dead`).
    pub jobs_reaped: IntCounterVec,
    /// Callbacks by outcome (`delivered`, `refused`, `failed`).
    pub callbacks: IntCounterVec,
    /// Wall time of one model segment, in seconds: the interval between progress reports. With
    /// segments side by side single intervals are uneven (the first spans the song's opening
    /// segments, the ones finished with it follow at once); their mean is the song's time per
    /// segment.
    pub segment_seconds: Histogram,
    /// Wall time of one job from claim to acknowledgement, in seconds.
    pub job_seconds: Histogram,
    /// Length of the queue's lists (`toWorker`, `processing`, `deadLetter`) and of the delayed
    /// set (`delayed`), sampled by the reaper.
    pub queue_depth: IntGaugeVec,
}

impl Metrics {
    /// Creates and registers all metrics.
    pub fn new() -> Result<Arc<Self>, Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> Result<IntCounter, Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let jobs_claimed = counter("stemsep_worker_jobs_claimed_total", "Jobs claimed")?;
        let jobs_done = counter(
            "stemsep_worker_jobs_done_total",
            "Jobs separated and acknowledged",
        )?;
        let jobs_failed = counter("stemsep_worker_jobs_failed_total", "Failed job attempts")?;
        let jobs_retried = counter(
            "stemsep_worker_jobs_retried_total",
            "Failed attempts queued for a retry",
        )?;
        let jobs_dead = counter(
            "stemsep_worker_jobs_dead_total",
            "Jobs dead-lettered after the last attempt",
        )?;
        let jobs_released = counter(
            "stemsep_worker_jobs_released_total",
            "Jobs handed back at shutdown",
        )?;
        let jobs_lost = counter(
            "stemsep_worker_jobs_lost_total",
            "Attempts given up because another worker owns the job now",
        )?;
        let jobs_expired = counter(
            "stemsep_worker_jobs_expired_total",
            "Finished jobs deleted when their retention ended",
        )?;
        let jobs_reaped = IntCounterVec::new(
            Opts::new(
                "stemsep_worker_jobs_reaped_total",
                "Jobs taken back from lost workers",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(jobs_reaped.clone()))?;
        let callbacks = IntCounterVec::new(
            Opts::new(
                "stemsep_worker_callbacks_total",
                "Completion callbacks by outcome",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(callbacks.clone()))?;
        // 0.05 s (tiny test model) to ~100 s (full model on a slow core).
        let segment_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "stemsep_worker_segment_seconds",
                "Seconds per model segment",
            )
            .buckets(exponential_buckets(0.05, 2.0, 12)?),
        )?;
        registry.register(Box::new(segment_seconds.clone()))?;
        let job_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "stemsep_worker_job_seconds",
                "Seconds per job, claim to ack",
            )
            .buckets(exponential_buckets(0.25, 2.0, 14)?),
        )?;
        registry.register(Box::new(job_seconds.clone()))?;
        let queue_depth = IntGaugeVec::new(
            Opts::new("stemsep_queue_depth", "Entries in each queue list"),
            &["list"],
        )?;
        registry.register(Box::new(queue_depth.clone()))?;
        Ok(Arc::new(Metrics {
            registry,
            jobs_claimed,
            jobs_done,
            jobs_failed,
            jobs_retried,
            jobs_dead,
            jobs_released,
            jobs_lost,
            jobs_expired,
            jobs_reaped,
            callbacks,
            segment_seconds,
            job_seconds,
            queue_depth,
        }))
    }

    /// All metrics in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl From<prometheus::Error> for Error {
    fn from(e: prometheus::Error) -> Self {
        Error::Metrics(e.to_string())
    }
}

/// Serves `GET /metrics` on `bind` until the returned server is stopped or dropped; returns the
/// bound address (useful with port 0).
pub fn serve(
    metrics: Arc<Metrics>,
    bind: &str,
) -> Result<(actix_web::dev::Server, SocketAddr), Error> {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let data = web::Data::from(metrics);
    let server = HttpServer::new(move || {
        App::new().app_data(data.clone()).route(
            "/metrics",
            web::get().to(|m: web::Data<Metrics>| async move {
                HttpResponse::Ok()
                    .content_type("text/plain; version=0.0.4")
                    .body(m.render())
            }),
        )
    })
    .workers(1)
    // The worker handles SIGTERM itself and stops this server when it is done.
    .disable_signals()
    .bind(bind)
    .map_err(|e| Error::Config(format!("metrics address {bind}: {e}")))?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| Error::Config(format!("metrics address {bind}: nothing bound")))?;
    Ok((server.run(), addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn served_over_http_in_text_format() {
        let m = Metrics::new().unwrap();
        m.jobs_done.inc();
        m.callbacks.with_label_values(&["refused"]).inc();
        m.queue_depth.with_label_values(&["toWorker"]).set(7);
        m.segment_seconds.observe(0.3);
        let (server, addr) = serve(m.clone(), "127.0.0.1:0").unwrap();
        let handle = server.handle();
        tokio::spawn(server);
        let body = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in [
            "stemsep_worker_jobs_done_total 1",
            "stemsep_worker_callbacks_total{outcome=\"refused\"} 1",
            "stemsep_queue_depth{list=\"toWorker\"} 7",
            "stemsep_worker_segment_seconds_count 1",
        ] {
            assert!(
                body.lines().any(|l| l == line),
                "{line} missing from\n{body}"
            );
        }
        handle.stop(false).await;
    }
}
