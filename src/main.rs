//! The redis-sessions binary: settings, telemetry, then the application.

use std::process::ExitCode;

use redis_sessions::{Application, config::Settings, telemetry};

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("redis-sessions: configuration error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _logs = telemetry::init(&settings.log);
    let outcome = actix_web::rt::System::new()
        .block_on(async { Application::build(settings).await?.run().await });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error.chain = %telemetry::error_chain(&e), "redis-sessions stopped: {e}");
            eprintln!("redis-sessions: {}", telemetry::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
