//! The redis-sessions binary: settings, telemetry, then the application.

use std::process::ExitCode;

use redis_sessions::{Application, config::Settings, telemetry};

/// jemalloc: under load glibc's malloc and free took an eighth of the server's CPU (each
/// 2 KB page made it consolidate its fast bins); jemalloc cut user CPU per request by
/// 11-20% for 1 MB more peak RSS (README, Performance).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
