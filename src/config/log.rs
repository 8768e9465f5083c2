//! Log output: `LOG_FORMAT` and `RUST_LOG`.

use super::ConfigError;
use super::env::RawEnv;

/// Log output settings.
#[derive(Clone, Debug)]
pub struct LogSettings {
    /// Line format.
    pub format: LogFormat,
    /// `RUST_LOG`-style filter directives.
    pub filter: String,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for the platform's log aggregation.
    Json,
    /// Human-readable lines.
    Text,
}

impl LogSettings {
    /// `LOG_FORMAT` (JSON by default on Cloud Foundry) and `RUST_LOG`.
    pub(super) fn from_raw(raw: &RawEnv, on_cloud_foundry: bool) -> Result<Self, ConfigError> {
        let format = match raw.log_format.as_deref().map(str::trim) {
            None if on_cloud_foundry => LogFormat::Json,
            None => LogFormat::Text,
            Some(f) if f.eq_ignore_ascii_case("json") => LogFormat::Json,
            Some(f) if f.eq_ignore_ascii_case("text") => LogFormat::Text,
            Some(f) => {
                return Err(ConfigError::Invalid {
                    var: "LOG_FORMAT",
                    expected: "json or text",
                    got: f.to_owned(),
                });
            }
        };
        let filter = raw.rust_log.clone().unwrap_or_else(|| "info".to_owned());
        // ASCII first: tracing-subscriber 0.3.23's directive parser panics on some non-ASCII
        // input (it slices inside a character), which ci/fuzz.sh found. Targets, levels and
        // field names are ASCII anyway.
        if !filter.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            || tracing_subscriber::EnvFilter::builder()
                .parse(&filter)
                .is_err()
        {
            return Err(ConfigError::Invalid {
                var: "RUST_LOG",
                expected: "an ASCII log filter such as info or redis_sessions=debug,info",
                got: filter,
            });
        }
        Ok(Self { format, filter })
    }
}
