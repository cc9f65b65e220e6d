//! `stemsep-worker`: claims songs from the Redis queue and separates them (see
//! [`stemsep_worker::runner`]). SIGTERM or SIGINT stops it cleanly.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use stemsep_common::logging;
use stemsep_worker::config::{RunnerConfig, WorkerArgs};
use stemsep_worker::runner;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    // SAFETY: the first statement of main, before the async runtime or anything else starts a
    // thread.
    unsafe { stemsep_engine::keep_freed_memory() };
    let args = WorkerArgs::parse();
    // A bad setting stops the worker here, before it claims anything, rather than failing jobs.
    let config = match args.runner_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stemsep-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stemsep-worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(run(args, config));
    // A job handed back at shutdown may still be computing on a blocking thread; its result is
    // no longer wanted, so do not wait for it.
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}

async fn run(args: WorkerArgs, config: RunnerConfig) -> ExitCode {
    match args.redis.queue() {
        Ok(q) => {
            logging::init(q, "worker", logging::DEFAULT_MAX_LINES);
        }
        Err(e) => {
            eprintln!("stemsep-worker: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone()));
    match runner::serve(args, config, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn stop_on_signal(stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the worker with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    stop.cancel();
}
