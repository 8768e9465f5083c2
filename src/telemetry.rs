//! Logs: JSON lines on the platform, readable text locally, one line per request; and
//! Prometheus [`metrics`].

pub mod access;
pub mod metrics;
pub mod output;

use std::time::Instant;

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Span;
use tracing_actix_web::RootSpanBuilder;
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

/// The request's id: the router's, or the UUID tracing-actix-web made for the request.
#[derive(Clone, Debug)]
pub struct RequestId {
    id: String,
    started: Instant,
}

impl RequestId {
    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.id
    }
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_VCAP_REQUEST_ID: HeaderName = HeaderName::from_static("x-vcap-request-id");

/// Accepts an incoming id only if it is short, printable ASCII: it ends up in every log line.
fn acceptable(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    (!text.is_empty() && text.len() <= 128 && text.bytes().all(|b| b.is_ascii_graphic()))
        .then_some(text)
}

/// The id from `X-Vcap-Request-Id` (the Cloud Foundry router's) or `X-Request-Id`, else the
/// UUID that `TracingLogger` made: one id per request, whichever way it came.
fn request_id_of(request: &ServiceRequest) -> String {
    let headers = request.headers();
    headers
        .get(&X_VCAP_REQUEST_ID)
        .and_then(acceptable)
        .or_else(|| headers.get(&X_REQUEST_ID).and_then(acceptable))
        .map(str::to_owned)
        .or_else(|| {
            request
                .extensions()
                .get::<tracing_actix_web::RequestId>()
                .map(|uuid| uuid.to_string())
        })
        .unwrap_or_default()
}

/// Middleware outside `TracingLogger`: echoes the request's id back as `X-Request-Id`.
/// Being outermost, it also records each request's duration and final status for the
/// metrics.
pub async fn echo_request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let outcome = next.call(req).await;
    metrics::http_request(&method, &outcome, started);
    let mut res = outcome?;
    let id = res
        .request()
        .extensions()
        .get::<RequestId>()
        .and_then(|r| HeaderValue::from_str(&r.id).ok());
    if let Some(value) = id {
        res.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    Ok(res)
}

/// The per-request span, and the one log line written when the request ends.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let id = request_id_of(request);
        let span = tracing::info_span!("request", request_id = %id);
        request.extensions_mut().insert(RequestId {
            id,
            started: Instant::now(),
        });
        span
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        match outcome {
            Ok(res) => {
                let req = res.request();
                let extensions = req.extensions();
                let (request_id, duration) = extensions
                    .get::<RequestId>()
                    .map(|r| (r.id.as_str(), r.started.elapsed()))
                    .unwrap_or_default();
                access::write(&access::Access {
                    method: req.method().as_str(),
                    path: req.path(),
                    status: res.status().as_u16(),
                    duration,
                    request_id,
                });
            }
            Err(err) => {
                let _entered = span.enter();
                tracing::error!(target: "redis_sessions::access", reason = %err, "request failed before a response");
            }
        }
    }
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
