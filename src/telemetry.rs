//! Logs: JSON lines on the platform, readable text locally, one line per request.

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

/// Keeps the background log writer alive; dropping it flushes what is buffered.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Installs the global subscriber; a second call (as in tests) is a no-op.
///
/// Lines are written to stdout by a background thread, which batches them: one `write(2)`
/// per line cost about 15% of throughput. The writer blocks rather than drop lines when it
/// falls behind, and the returned guard flushes on drop at shutdown.
pub fn init(settings: &LogSettings) -> LogGuard {
    // RUST_LOG was validated with the settings, so this parse cannot fail; fall back anyway.
    let filter = EnvFilter::try_new(&settings.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // The default queue holds 128,000 lines, megabytes in a 64M container; 4,096 lines is
    // plenty to absorb bursts, and the writer blocks rather than grow past it.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(4096)
        .finish(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
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
    // Already installed (tests start many applications in one process): keep the first.
    LogGuard {
        _writer: result.ok().map(|()| guard),
    }
}

/// An error and all its sources, joined by ": ", for the log.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}

/// The request's id, from the router or made up here.
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

/// A per-process random prefix and a counter: unique ids without a syscall per request.
fn generate_id() -> String {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        crate::session::id::os_random::<8>()
            .map(u64::from_le_bytes)
            .unwrap_or_else(|_| {
                // The id only correlates logs; a clock-based prefix will do if the OS fails us.
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or_default()
            })
    });
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix:016x}{n:016x}")
}

/// Middleware: takes the id from `X-Vcap-Request-Id` (the Cloud Foundry router's) or
/// `X-Request-Id`, or makes one, and echoes it back as `X-Request-Id`.
pub async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(&X_VCAP_REQUEST_ID)
        .and_then(acceptable)
        .or_else(|| req.headers().get(&X_REQUEST_ID).and_then(acceptable))
        .map(str::to_owned)
        .unwrap_or_else(generate_id);
    req.extensions_mut().insert(RequestId {
        id: id.clone(),
        started: Instant::now(),
    });
    let mut res = next.call(req).await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    Ok(res)
}

/// The per-request span, and the one log line written when the request ends.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let id = request
            .extensions()
            .get::<RequestId>()
            .map(|r| r.id.clone())
            .unwrap_or_default();
        tracing::info_span!("request", request_id = %id)
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        let _entered = span.enter();
        match outcome {
            Ok(res) => {
                let req = res.request();
                let (request_id, duration_ms) = req
                    .extensions()
                    .get::<RequestId>()
                    .map(|r| (r.id.clone(), r.started.elapsed().as_secs_f64() * 1000.0))
                    .unwrap_or_default();
                tracing::info!(
                    target: "redis_sessions::access",
                    method = %req.method(),
                    path = %req.path(),
                    status = res.status().as_u16(),
                    duration_ms = (duration_ms * 1000.0).round() / 1000.0,
                    request_id = %request_id,
                    "request"
                );
            }
            Err(err) => {
                tracing::error!(target: "redis_sessions::access", reason = %err, "request failed before a response");
            }
        }
    }
}
