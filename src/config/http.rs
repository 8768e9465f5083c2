//! The HTTP server: port, worker threads, the shutdown grace period and the metrics port.

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
    /// Port of the separate Prometheus listener; `None` when `METRICS_PORT=off`.
    pub metrics_port: Option<u16>,
}

impl HttpSettings {
    /// `PORT`, `HTTP_WORKERS`, `SHUTDOWN_TIMEOUT_SECONDS` and `METRICS_PORT`.
    pub(super) fn from_raw(raw: &RawEnv) -> Result<Self, ConfigError> {
        let port = parse_num(
            raw.port.as_deref(),
            "PORT",
            "a port number between 0 and 65535",
            8080,
            0..=65535,
        )?;
        Ok(Self {
            port,
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
            metrics_port: metrics_port(raw.metrics_port.as_deref(), port)?,
        })
    }
}

/// `METRICS_PORT`: a port other than `PORT`, or `off`.
fn metrics_port(value: Option<&str>, port: u16) -> Result<Option<u16>, ConfigError> {
    match value.map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("off") => Ok(None),
        value => {
            let expected = "a port number between 0 and 65535 other than PORT's, or off";
            let metrics_port = parse_num(value, "METRICS_PORT", expected, 9090, 0..=65535)?;
            // Port 0 picks a free port for each listener, so only a fixed port can clash.
            if metrics_port != 0 && metrics_port == port {
                return Err(ConfigError::Invalid {
                    var: "METRICS_PORT",
                    expected,
                    got: metrics_port.to_string(),
                });
            }
            Ok(Some(metrics_port))
        }
    }
}
