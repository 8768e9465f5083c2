//! Logs: JSON lines on the platform, readable text locally, one line per request; and
//! Prometheus [`metrics`].

pub mod access;
pub mod metrics;
pub mod output;
mod request;

pub use request::RequestLog;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Writes out buffered log lines when dropped, at the end of `main`.
#[must_use = "dropping the guard writes out the buffered log lines"]
pub struct LogGuard(());

impl Drop for LogGuard {
    fn drop(&mut self) {
        output::flush_all();
    }
}

/// Installs the global subscriber; a second call (as in tests) is a no-op.
///
/// Lines go to stdout, batched on the HTTP worker threads ([`output`]).
pub fn init(settings: &LogSettings) -> LogGuard {
    // RUST_LOG was validated with the settings, so this parse cannot fail; fall back anyway.
    let filter = EnvFilter::try_new(&settings.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(output::Stdout)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let result = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.with_target(false).compact().try_init(),
    };
    if result.is_ok() {
        access::use_json(settings.format == LogFormat::Json);
    }
    // Already installed (tests start many applications in one process): keep the first.
    LogGuard(())
}

/// An error and all its sources, joined by ": ", for the log.
///
/// A cause whose text its parent already shows is left out: wrappers such as deadpool's
/// and redis-rs's repeat their source in their own message, which would otherwise print
/// "Connection refused" three times.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = error.to_string();
    let mut parent = chain.clone();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parent.contains(&text) {
            chain.push_str(": ");
            chain.push_str(&text);
        }
        parent = text;
        source = cause.source();
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Layer(String, #[source] Option<Box<Layer>>);

    fn chain(texts: &[&str]) -> Layer {
        texts
            .iter()
            .rev()
            .fold(None, |inner: Option<Layer>, text| {
                Some(Layer(text.to_string(), inner.map(Box::new)))
            })
            .unwrap()
    }

    #[test]
    fn each_cause_is_printed_once_even_when_wrappers_repeat_it() {
        let refused = "Connection refused (os error 111)";
        let wrapped = format!("Error occurred while creating a new object: {refused}");
        let e = chain(&[
            "the session store is unreachable",
            &wrapped,
            refused,
            refused,
        ]);
        assert_eq!(
            error_chain(&e),
            format!("the session store is unreachable: {wrapped}")
        );
    }

    #[test]
    fn distinct_causes_are_all_printed() {
        let e = chain(&["outer", "middle", "inner"]);
        assert_eq!(error_chain(&e), "outer: middle: inner");
    }
}
