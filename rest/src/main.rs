//! `stemsep-rest`: parse the configuration, install logging, serve.

use clap::Parser;
use stemsep_rest::config::Settings;
use stemsep_rest::startup::Application;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let settings = Settings::parse();
    // A bad setting stops the server before it binds, with the setting's name.
    if let Err(e) = settings.validate() {
        eprintln!("stemsep-rest: {e}");
        return std::process::ExitCode::from(2);
    }
    match run(settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stemsep-rest: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let queue = settings.redis.queue()?;
    stemsep_common::logging::init(queue, "rest", settings.log_lines);
    let app = Application::build(&settings).await?;
    tracing::info!(bind = %settings.bind, port = app.port(), models = ?settings.models, auth = ?settings.auth, "stemsep-rest listening");
    app.run_until_stopped().await?;
    Ok(())
}
