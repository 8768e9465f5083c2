//! The HTTP server: port, worker threads and the shutdown grace period.

use std::time::Duration;

use super::ConfigError;
use super::env::{RawEnv, parse_num};

/// HTTP server settings.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// TCP port on 0.0.0.0; 0 picks a free one.
    pub port: u16,
    /// Worker threads.
    pub workers: usize,
    /// Grace period for in-flight requests after SIGTERM.
    pub shutdown_timeout: Duration,
}

impl HttpSettings {
    /// `PORT`, `HTTP_WORKERS` and `SHUTDOWN_TIMEOUT_SECONDS`.
    pub(super) fn from_raw(raw: &RawEnv) -> Result<Self, ConfigError> {
        Ok(Self {
            port: parse_num(
                raw.port.as_deref(),
                "PORT",
                "a port number between 0 and 65535",
                8080,
                0..=65535,
            )?,
            workers: parse_num(
                raw.http_workers.as_deref(),
                "HTTP_WORKERS",
                "a number of threads between 1 and 64",
                2,
                1..=64,
            )?,
            shutdown_timeout: Duration::from_secs(parse_num(
                raw.shutdown_timeout_seconds.as_deref(),
                "SHUTDOWN_TIMEOUT_SECONDS",
                "a number of seconds between 0 and 3600",
                8,
                0..=3600,
            )?),
        })
    }
}
