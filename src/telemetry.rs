//! Logs: JSON lines on the platform, readable text locally, one line per request; and
//! Prometheus [`metrics`].

pub mod access;
mod histogram;
pub mod metrics;
pub mod output;
mod request;

pub use request::{RequestLog, in_request};

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};

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
    let builder = tracing_subscriber::fmt()
        .with_writer(output::Stdout)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let result = match settings.format {
        LogFormat::Json => install(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
            &settings.filter,
        ),
        LogFormat::Text => install(
            builder.with_target(false).compact().finish(),
            &settings.filter,
        ),
    };
    if result.is_ok() {
        access::use_json(settings.format == LogFormat::Json);
    }
    // Already installed (tests start many applications in one process): keep the first.
    LogGuard(())
}

/// Installs `subscriber` behind the cheapest filter that means what `RUST_LOG` says.
///
/// `EnvFilter` takes a lock and looks the span up in a map on every span enter and exit, even
/// when no directive names a span (tokio-rs/tracing#3487 removes that, unreleased in 0.3.23);
/// the per-request span is entered and exited on every poll, so that cost ~0.5 µs a request
/// (README, Performance). `Targets` reads the same `target=level` directives without it.
fn install<S>(subscriber: S, filter: &str) -> Result<(), TryInitError>
where
    S: Subscriber + Send + Sync + 'static,
{
    match static_filter(filter) {
        Some(targets) => subscriber.with(targets).try_init(),
        // RUST_LOG was validated with the settings, so this parse cannot fail; fall back anyway.
        None => subscriber
            .with(EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info")))
            .try_init(),
    }
}

/// `RUST_LOG` as a [`Targets`] filter, if it has only `target=level` directives; span and
/// field directives (`[...]`, `{...}`) need `EnvFilter`, and so do empty directives and
/// spaces, which `EnvFilter` skips but `Targets` reads differently: with it, `info,` turns
/// every line off and ` redis=debug` names a target that starts with a space.
fn static_filter(filter: &str) -> Option<Targets> {
    let plain = filter.split(',').all(|directive| {
        !directive.is_empty()
            && !directive.contains(|c: char| c.is_whitespace() || "[]{}".contains(c))
    });
    if !plain {
        return None;
    }
    filter.parse().ok()
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
    use proptest::prelude::*;
    use tracing::{Dispatch, Level, dispatcher};
    use tracing_subscriber::{EnvFilter, Registry};

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

    /// Whether each of a grid of targets and levels is enabled, under `dispatch`.
    fn decisions(dispatch: &Dispatch) -> Vec<bool> {
        macro_rules! grid {
            ($($target:literal),*) => {
                dispatcher::with_default(dispatch, || vec![$(
                    tracing::enabled!(target: $target, Level::TRACE),
                    tracing::enabled!(target: $target, Level::DEBUG),
                    tracing::enabled!(target: $target, Level::INFO),
                    tracing::enabled!(target: $target, Level::WARN),
                    tracing::enabled!(target: $target, Level::ERROR),
                )*])
            };
        }
        grid!(
            "redis_sessions",
            "redis_sessions::access",
            "redis_sessions::session::store",
            "actix_web",
            "actix_server::worker",
            "redis"
        )
    }

    fn directive() -> impl Strategy<Value = String> {
        let target = prop::sample::select(vec![
            "redis_sessions",
            "redis_sessions::access",
            "redis_sessions::session",
            "actix_web",
            "actix_server",
            "redis",
            "other",
        ]);
        let level = prop::sample::select(vec![
            "trace", "debug", "info", "warn", "error", "off", "INFO", "Warn", "3",
        ]);
        prop_oneof![
            Just(String::new()),
            Just(" info".to_owned()),
            level.clone().prop_map(str::to_owned),
            target.clone().prop_map(str::to_owned),
            (target, level).prop_map(|(t, l)| format!("{t}={l}")),
        ]
    }

    proptest! {
        #[test]
        fn a_static_rust_log_filters_exactly_as_env_filter_does(
            directives in prop::collection::vec(directive(), 1..5),
        ) {
            let filter = directives.join(",");
            let Some(targets) = static_filter(&filter) else {
                // Left to EnvFilter itself.
                return Ok(());
            };
            let env = EnvFilter::try_new(&filter).expect("a valid filter");
            prop_assert_eq!(
                decisions(&Dispatch::new(Registry::default().with(targets))),
                decisions(&Dispatch::new(Registry::default().with(env))),
                "RUST_LOG={}", filter
            );
        }
    }

    #[test]
    fn span_field_and_empty_directives_keep_env_filter() {
        for filter in [
            "redis_sessions[request]=debug",
            "info,redis[{id}]=trace",
            "a[{b=1}]=info",
            "",
            "info,",
            "info, redis=debug",
        ] {
            assert!(static_filter(filter).is_none(), "{filter}");
        }
        assert!(static_filter("info,actix_server=warn").is_some());
    }
}
