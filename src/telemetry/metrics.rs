//! Prometheus metrics, served on a listener of their own (`METRICS_PORT`).
//!
//! The `metrics` facade records; `metrics-exporter-prometheus` (without its own listener or
//! push gateway) keeps the counters and gauges, `telemetry::histogram` the histograms, and
//! both render the text format on `GET /metrics`. Names follow the OpenTelemetry HTTP
//! semantic conventions mapped to Prometheus; our own carry the `redis_sessions_` prefix.
//! Every histogram has explicit buckets, never a summary, whose quantiles cannot be added
//! up across instances.
//!
//! The rest of the code calls the small functions below, one line per event. Recording
//! never fails and never blocks a request; with `METRICS_PORT=off` no recorder is
//! installed and each call returns at once.

use std::net::TcpListener;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ::metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use actix_web::dev::{Server, ServiceResponse};
use actix_web::http::Method;
use actix_web::{App, HttpResponse, HttpServer, web};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::histogram::{Histograms, SplitRecorder};

use crate::session::StoreError;
use crate::session::cookie::CookieProblem;
use crate::session::store::redis::{PoolRegistry, PoolTotals};

/// Duration of HTTP requests, by method, route pattern and status.
pub const HTTP_REQUEST_DURATION: &str = "http_server_request_duration_seconds";
/// Duration of Redis operations, by operation and outcome.
pub const REDIS_OPERATION_DURATION: &str = "redis_sessions_redis_operation_duration_seconds";
/// Time spent waiting for a pooled Redis connection.
pub const REDIS_POOL_WAIT: &str = "redis_sessions_redis_pool_wait_duration_seconds";
/// Redis connections opened (the first ones and every reconnect).
pub const REDIS_CONNECTIONS_OPENED: &str = "redis_sessions_redis_connections_opened_total";
/// Times a failed connection made its pool replace every connection it held.
pub const REDIS_POOL_RESETS: &str = "redis_sessions_redis_pool_resets_total";
/// Open pooled Redis connections.
pub const REDIS_POOL_CONNECTIONS: &str = "redis_sessions_redis_pool_connections";
/// Pooled Redis connections checked out right now.
pub const REDIS_POOL_IN_USE: &str = "redis_sessions_redis_pool_connections_in_use";
/// Upper bound of pooled Redis connections.
pub const REDIS_POOL_MAX: &str = "redis_sessions_redis_pool_connections_max";
/// Requests waiting for a pooled Redis connection right now.
pub const REDIS_POOL_WAITING: &str = "redis_sessions_redis_pool_waiting";
/// Sessions created.
pub const SESSIONS_CREATED: &str = "redis_sessions_sessions_created_total";
/// Sessions ended by the visitor (`POST /reset`, `DELETE /api/session`).
pub const SESSIONS_ENDED: &str = "redis_sessions_sessions_ended_total";
/// Sessions whose cookie was still presented after they expired or were deleted.
pub const SESSIONS_EXPIRED: &str = "redis_sessions_sessions_expired_total";
/// Session cookies ignored as suspicious, by reason.
pub const BAD_COOKIES: &str = "redis_sessions_bad_cookies_total";
/// Constant 1, labelled with what this process is.
pub const BUILD_INFO: &str = "redis_sessions_build_info";

/// The `http_route` of requests that matched no route: one fixed value, so that scanners
/// probing random paths cannot create new series.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// From 0.5 ms (a counter request takes about 1 ms under load) to 10 s (far past any deadline).
const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// From 0.1 ms (one local round trip) to 1 s (past the 500 ms default deadline).
const REDIS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// What `GET /metrics` renders: the exporter's counters and gauges, and the histograms.
#[derive(Clone)]
pub struct MetricsHandle {
    prometheus: PrometheusHandle,
    histograms: Arc<Histograms>,
}

impl MetricsHandle {
    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = self.prometheus.render();
        text.push_str(&self.histograms.render());
        text
    }
}

/// The process-wide recorder's handle; `None` until [`install`] runs.
static HANDLE: OnceLock<MetricsHandle> = OnceLock::new();

/// Installs the process-wide recorder; later calls (tests start many applications in one
/// process) return the same handle.
pub fn install() -> MetricsHandle {
    HANDLE
        .get_or_init(|| {
            let histograms = Arc::new(Histograms::new(
                vec![
                    (HTTP_REQUEST_DURATION, HTTP_BUCKETS),
                    (REDIS_OPERATION_DURATION, REDIS_BUCKETS),
                    (REDIS_POOL_WAIT, REDIS_BUCKETS),
                ],
                // Any other histogram gets buckets too, never a summary.
                HTTP_BUCKETS,
            ));
            let recorder = SplitRecorder {
                inner: PrometheusBuilder::new().build_recorder(),
                histograms: histograms.clone(),
            };
            let handle = MetricsHandle {
                prometheus: recorder.inner.handle(),
                histograms,
            };
            // Fails only if another recorder is installed, which this crate never does.
            if let Err(e) = ::metrics::set_global_recorder(recorder) {
                tracing::warn!(error = %e, "metrics recorder not installed");
            }
            describe();
            handle
        })
        .clone()
}

/// Whether a recorder is installed; every recording function checks this first.
fn enabled() -> bool {
    HANDLE.get().is_some()
}

fn describe() {
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "Duration of HTTP requests, by method, route pattern and status code."
    );
    describe_histogram!(
        REDIS_OPERATION_DURATION,
        Unit::Seconds,
        "Duration of Redis operations, by operation and outcome."
    );
    describe_histogram!(
        REDIS_POOL_WAIT,
        Unit::Seconds,
        "Time spent waiting for a pooled Redis connection."
    );
    describe_counter!(
        REDIS_CONNECTIONS_OPENED,
        "Redis connections opened, the first ones and every reconnect."
    );
    describe_counter!(
        REDIS_POOL_RESETS,
        "Times a failed Redis connection made its pool replace all its connections."
    );
    describe_gauge!(REDIS_POOL_CONNECTIONS, "Open pooled Redis connections.");
    describe_gauge!(
        REDIS_POOL_IN_USE,
        "Pooled Redis connections checked out (momentarily: connections are multiplexed)."
    );
    describe_gauge!(REDIS_POOL_MAX, "Upper bound of pooled Redis connections.");
    describe_gauge!(
        REDIS_POOL_WAITING,
        "Requests waiting for a pooled Redis connection."
    );
    describe_counter!(SESSIONS_CREATED, "Sessions created.");
    describe_counter!(
        SESSIONS_ENDED,
        "Sessions ended by the visitor (POST /reset, DELETE /api/session)."
    );
    describe_counter!(
        SESSIONS_EXPIRED,
        "Sessions found expired or deleted while their cookie was still presented."
    );
    describe_counter!(
        BAD_COOKIES,
        "Session cookies ignored as suspicious, by reason."
    );
    describe_gauge!(
        BUILD_INFO,
        "Constant 1, labelled with version, store and topology."
    );
}

/// Sets `redis_sessions_build_info{version, store, topology} 1`.
pub fn build_info(store: &'static str, topology: &'static str) {
    if enabled() {
        gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "store" => store, "topology" => topology).set(1.0);
    }
}

/// OpenTelemetry's `http.request.method`: the known methods, anything else `_OTHER`, so a
/// client cannot make new series up.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

/// Records one finished request; called by the outermost middleware, so it sees the final
/// status, including refusals by the limits and 404s.
pub fn http_request<B>(
    method: &Method,
    outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    started: Instant,
) {
    if !enabled() {
        return;
    }
    let (route, status) = match outcome {
        // The route pattern, never the path: `match_pattern` is `None` for the default
        // service, which is every unknown path.
        Ok(res) => (res.request().match_pattern(), res.status()),
        Err(e) => (None, e.as_response_error().status_code()),
    };
    let method = method_label(method);
    let status = status.as_u16();
    let elapsed = started.elapsed();
    HTTP_HANDLES.with_borrow_mut(|handles| {
        let known = handles
            .iter()
            .find(|h| h.status == status && h.method == method && h.route == route);
        match known {
            Some(h) => h.histogram.record(elapsed),
            None => {
                let histogram = ::metrics::histogram!(
                    HTTP_REQUEST_DURATION,
                    "http_request_method" => method,
                    "http_route" => route.clone().unwrap_or_else(|| UNMATCHED_ROUTE.to_owned()),
                    "http_response_status_code" => status.to_string(),
                );
                histogram.record(elapsed);
                handles.push(HttpHandle {
                    method,
                    route,
                    status,
                    histogram,
                });
            }
        }
    });
}

/// One label set of the request histogram and its registered handle.
struct HttpHandle {
    method: &'static str,
    route: Option<String>,
    status: u16,
    histogram: ::metrics::Histogram,
}

// Each worker thread keeps the handles it has used: a lookup here is a short scan of a few
// dozen entries at most (routes × methods × statuses seen), cheaper than building a key and
// searching the recorder's shared registry on every request.
thread_local! {
    static HTTP_HANDLES: std::cell::RefCell<Vec<HttpHandle>> = const { std::cell::RefCell::new(Vec::new()) };
    static REDIS_HANDLES: std::cell::RefCell<Vec<(RedisOperation, &'static str, ::metrics::Histogram)>> =
        const { std::cell::RefCell::new(Vec::new()) };
    static POOL_WAIT: std::cell::OnceCell<::metrics::Histogram> = const { std::cell::OnceCell::new() };
    static SESSIONS_CREATED_HANDLE: std::cell::OnceCell<::metrics::Counter> = const { std::cell::OnceCell::new() };
}

/// A Redis operation, for the `operation` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisOperation {
    /// A session update (`EVALSHA` of the apply script).
    Apply,
    /// A session read.
    Load,
    /// A session delete.
    Delete,
    /// A readiness `PING`.
    Ping,
    /// Reading or storing the shared signing secret.
    Secret,
}

impl RedisOperation {
    fn as_str(self) -> &'static str {
        match self {
            RedisOperation::Apply => "apply",
            RedisOperation::Load => "load",
            RedisOperation::Delete => "delete",
            RedisOperation::Ping => "ping",
            RedisOperation::Secret => "secret",
        }
    }
}

/// The `outcome` label of a failed store call: the store's own classification, so that
/// logs and metrics name a failure alike.
pub fn store_outcome(error: &StoreError) -> &'static str {
    error.kind().label()
}

/// Times one Redis operation; recorded when dropped, so an operation abandoned at the
/// request's deadline still counts, as a timeout.
#[must_use = "the operation is recorded when the timer is dropped"]
pub struct RedisTimer {
    operation: RedisOperation,
    started: Instant,
    outcome: &'static str,
}

impl RedisTimer {
    /// Starts timing `operation`.
    pub fn start(operation: RedisOperation) -> Self {
        Self {
            operation,
            started: Instant::now(),
            outcome: "timeout",
        }
    }

    /// Notes how the operation ended and passes its result through.
    pub fn finish<T>(mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        self.outcome = match &result {
            Ok(_) => "ok",
            Err(e) => store_outcome(e),
        };
        result
    }
}

impl Drop for RedisTimer {
    fn drop(&mut self) {
        if !enabled() {
            return;
        }
        let elapsed = self.started.elapsed();
        REDIS_HANDLES.with_borrow_mut(|handles| {
            let known = handles
                .iter()
                .find(|(op, outcome, _)| *op == self.operation && *outcome == self.outcome);
            match known {
                Some((_, _, histogram)) => histogram.record(elapsed),
                None => {
                    let histogram = ::metrics::histogram!(
                        REDIS_OPERATION_DURATION,
                        "operation" => self.operation.as_str(),
                        "outcome" => self.outcome,
                    );
                    histogram.record(elapsed);
                    handles.push((self.operation, self.outcome, histogram));
                }
            }
        });
    }
}

/// Records the wait for a pooled connection.
pub fn redis_pool_wait(waited: Duration) {
    if enabled() {
        POOL_WAIT.with(|h| {
            h.get_or_init(|| ::metrics::histogram!(REDIS_POOL_WAIT))
                .record(waited)
        });
    }
}

/// Counts a Redis connection opened.
pub fn redis_connection_opened() {
    if enabled() {
        counter!(REDIS_CONNECTIONS_OPENED).increment(1);
    }
}

/// Counts a pool told to replace its connections after a failure.
pub fn redis_pool_reset() {
    if enabled() {
        counter!(REDIS_POOL_RESETS).increment(1);
    }
}

fn redis_pool_gauges(totals: PoolTotals) {
    gauge!(REDIS_POOL_CONNECTIONS).set(totals.open as f64);
    gauge!(REDIS_POOL_IN_USE).set(totals.in_use as f64);
    gauge!(REDIS_POOL_MAX).set(totals.max as f64);
    gauge!(REDIS_POOL_WAITING).set(totals.waiting as f64);
}

/// Counts a session created: once per first visit, so through a handle kept per thread
/// rather than a registry lookup each time.
pub fn session_created() {
    if enabled() {
        SESSIONS_CREATED_HANDLE.with(|h| {
            h.get_or_init(|| counter!(SESSIONS_CREATED)).increment(1);
        });
    }
}

/// Counts a session ended by its visitor.
pub fn session_ended() {
    if enabled() {
        counter!(SESSIONS_ENDED).increment(1);
    }
}

/// Counts a session found expired (or deleted) while its cookie was still presented.
pub fn session_expired() {
    if enabled() {
        counter!(SESSIONS_EXPIRED).increment(1);
    }
}

/// The `reason` label of an ignored cookie.
///
/// A signature that matches no secret is one reason, `bad_signature`: an HMAC cannot tell
/// a tampered cookie from one signed by a secret we no longer have.
pub fn cookie_reason(problem: CookieProblem) -> &'static str {
    match problem {
        CookieProblem::Duplicated => "duplicate",
        CookieProblem::Oversized => "oversized",
        CookieProblem::NotAscii => "not_ascii",
        CookieProblem::Malformed => "malformed",
        CookieProblem::BadSignature => "bad_signature",
    }
}

/// Counts a session cookie ignored as suspicious.
pub fn bad_cookie(problem: CookieProblem) {
    if enabled() {
        counter!(BAD_COOKIES, "reason" => cookie_reason(problem)).increment(1);
    }
}

/// What the `/metrics` handler reads besides the recorder.
struct Exporter {
    handle: MetricsHandle,
    process: metrics_process::Collector,
    pools: Option<PoolRegistry>,
}

/// Starts the metrics listener: one worker thread serving `GET /metrics`, nothing else.
pub fn serve(
    listener: TcpListener,
    handle: MetricsHandle,
    pools: Option<PoolRegistry>,
) -> std::io::Result<Server> {
    let process = metrics_process::Collector::default();
    process.describe();
    let exporter = web::Data::new(Exporter {
        handle,
        process,
        pools,
    });
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(exporter.clone())
            .route("/metrics", web::get().to(render))
    })
    .workers(1)
    .shutdown_timeout(1)
    // The application's shutdown stops this server too; see `Application::run`.
    .disable_signals()
    .listen(listener)?
    .run())
}

/// `GET /metrics`: the Prometheus text format.
async fn render(exporter: web::Data<Exporter>) -> HttpResponse {
    exporter.process.collect();
    if let Some(pools) = &exporter.pools {
        redis_pool_gauges(pools.totals());
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(exporter.handle.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cookie_problem_has_its_own_reason() {
        let all = [
            CookieProblem::Duplicated,
            CookieProblem::Oversized,
            CookieProblem::NotAscii,
            CookieProblem::Malformed,
            CookieProblem::BadSignature,
        ];
        let mut reasons: Vec<&str> = all.iter().map(|p| cookie_reason(*p)).collect();
        reasons.sort();
        reasons.dedup();
        assert_eq!(reasons.len(), all.len(), "{reasons:?}");
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let odd = Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(method_label(&odd), "_OTHER");
        assert_eq!(method_label(&Method::GET), "GET");
    }
}
