//! Error answers: JSON for the API and probes, a small page elsewhere, never internals; and
//! [`failure_answer`], the one place where a failure becomes a status.

use std::sync::LazyLock;
use std::time::Instant;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::{StatusCode, header};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;

use super::throttle::{LOG_WINDOW, LogThrottle};
use crate::session::SessionError;
use crate::session::store::StoreErrorKind;
use crate::telemetry::error_chain;
use crate::views::error_page;

/// How a failed request is answered: status, back-off and a message free of internals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureAnswer {
    /// The status.
    pub status: StatusCode,
    /// Seconds for `Retry-After`, sent with every 503.
    pub retry_after: Option<u32>,
    /// What the visitor reads.
    pub message: &'static str,
}

/// A bug, not a condition of the store: the visitor learns nothing more.
const INTERNAL: FailureAnswer = FailureAnswer {
    status: StatusCode::INTERNAL_SERVER_ERROR,
    retry_after: None,
    message: "internal error",
};

/// The one place where failures become statuses.
///
/// - The store down, slow, failing over, loading or busy: 503, retry in 1 s; it passes by
///   itself.
/// - Out of memory: 503, retry in 10 s; capacity, not a bug. Sessions expire, or an
///   operator sets an eviction policy.
/// - Credentials, permissions or persistence: 503, retry in 30 s; an operator must act.
/// - Error replies with no name here, unexpected replies and every other session error:
///   500.
pub fn failure_answer(error: &SessionError) -> FailureAnswer {
    let SessionError::Store(store) = error else {
        return INTERNAL;
    };
    let (retry_after, message) = match store.kind() {
        StoreErrorKind::Timeout
        | StoreErrorKind::Connection
        | StoreErrorKind::Refused
        | StoreErrorKind::ReadOnly
        | StoreErrorKind::MasterDown
        | StoreErrorKind::Loading
        | StoreErrorKind::Busy => (1, "session store unavailable, please retry"),
        StoreErrorKind::OutOfMemory => (10, "session store is full, please retry later"),
        StoreErrorKind::Auth | StoreErrorKind::Permission | StoreErrorKind::Persistence => {
            (30, "session store unavailable, please retry later")
        }
        StoreErrorKind::Command | StoreErrorKind::Protocol => return INTERNAL,
    };
    FailureAnswer {
        status: StatusCode::SERVICE_UNAVAILABLE,
        retry_after: Some(retry_after),
        message,
    }
}

impl actix_web::ResponseError for SessionError {
    fn status_code(&self) -> StatusCode {
        failure_answer(self).status
    }

    fn error_response(&self) -> HttpResponse {
        // `render_server_errors` replaces this with a page or JSON for the path; this bare
        // body is the fallback and deliberately says nothing about the cause.
        HttpResponse::build(self.status_code()).finish()
    }
}

/// Store failures fail every request while they last; one line per kind per window.
static STORE_FAILURE_LOG: LazyLock<LogThrottle> = LazyLock::new(|| LogThrottle::new(LOG_WINDOW));

/// Whether a path is answered in JSON rather than HTML.
pub fn is_api_path(path: &str) -> bool {
    path.starts_with("/api/") || path == "/api" || path == "/health" || path == "/ready"
}

/// An error answer in the format the path calls for.
pub fn error_response(
    path: &str,
    status: actix_web::http::StatusCode,
    message: &str,
) -> HttpResponse {
    let mut builder = HttpResponse::build(status);
    builder.insert_header((header::CACHE_CONTROL, "no-store"));
    if status == actix_web::http::StatusCode::SERVICE_UNAVAILABLE {
        // Tells well-behaved clients and proxies to back off briefly rather than hammer.
        builder.insert_header((header::RETRY_AFTER, "1"));
    }
    if is_api_path(path) {
        builder.json(json!({ "error": message, "status": status.as_u16() }))
    } else {
        builder
            .content_type("text/html; charset=utf-8")
            .body(error_page(status.as_u16(), message).into_string())
    }
}

/// Default service: nothing lives at this path.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    error_response(
        req.path(),
        actix_web::http::StatusCode::NOT_FOUND,
        "not found",
    )
}

/// A known path asked with a method it does not serve.
pub fn method_not_allowed(req: &HttpRequest, allow: &'static str) -> HttpResponse {
    let mut res = error_response(
        req.path(),
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
    );
    res.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    res
}

/// Turns every 5xx into a body fit for its path, logging the full cause chain first.
pub fn render_server_errors<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let status = res.status();
    let answer = match res.response().error() {
        Some(err) => match err.as_error::<SessionError>() {
            Some(e) => {
                log_session_error(e);
                failure_answer(e)
            }
            None => {
                crate::telemetry::in_request(
                    || tracing::error!(error.message = %err, "request failed"),
                );
                FailureAnswer { status, ..INTERNAL }
            }
        },
        // Handlers that built their own answer (such as /ready's 503) keep it.
        None => return Ok(ErrorHandlerResponse::Response(res.map_into_left_body())),
    };
    let path = res.request().path().to_owned();
    let mut response = error_response(&path, status, answer.message);
    if let Some(seconds) = answer.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
    }
    let res: ServiceResponse<EitherBody<B, BoxBody>> =
        res.into_response(response).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}

/// Logs a failed request's cause at ERROR; store failures at most once per kind per window.
fn log_session_error(e: &SessionError) {
    let SessionError::Store(store) = e else {
        crate::telemetry::in_request(
            || tracing::error!(error.message = %e, error.chain = %error_chain(e), "request failed"),
        );
        return;
    };
    let kind = store.kind();
    if let Some(suppressed) = STORE_FAILURE_LOG.admit(kind, Instant::now()) {
        crate::telemetry::in_request(|| {
            tracing::error!(
                error.kind = kind.label(),
                error.message = %e,
                error.chain = %error_chain(e),
                suppressed,
                "request failed; store failures of one kind are logged once per {}s, \
                 `suppressed` counts the rest",
                LOG_WINDOW.as_secs()
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::session::store::{Rejection, StoreError};

    fn error_of(kind: StoreErrorKind) -> StoreError {
        let rejected = |reason| StoreError::Rejected {
            reason,
            source: "from the store".into(),
        };
        match kind {
            StoreErrorKind::Timeout => StoreError::Timeout(Duration::from_millis(500)),
            StoreErrorKind::Connection => StoreError::Unavailable("reset".into()),
            StoreErrorKind::Refused => StoreError::ConnectionRefused("refused".into()),
            StoreErrorKind::OutOfMemory => rejected(Rejection::OutOfMemory),
            StoreErrorKind::Auth => rejected(Rejection::Auth),
            StoreErrorKind::Permission => rejected(Rejection::Permission),
            StoreErrorKind::ReadOnly => rejected(Rejection::ReadOnly),
            StoreErrorKind::MasterDown => rejected(Rejection::MasterDown),
            StoreErrorKind::Loading => rejected(Rejection::Loading),
            StoreErrorKind::Busy => rejected(Rejection::Busy),
            StoreErrorKind::Persistence => rejected(Rejection::Persistence),
            StoreErrorKind::Command => StoreError::Command("WRONGTYPE".into()),
            StoreErrorKind::Protocol => StoreError::Protocol("odd".into()),
        }
    }

    #[test]
    fn every_named_store_condition_is_a_503_with_retry_after_and_only_bugs_are_500() {
        for kind in StoreErrorKind::ALL {
            let error = error_of(kind);
            assert_eq!(error.kind(), kind, "{error}");
            let answer = failure_answer(&SessionError::Store(error));
            match kind {
                StoreErrorKind::Command | StoreErrorKind::Protocol => {
                    assert_eq!(answer, INTERNAL, "{kind:?}");
                }
                _ => {
                    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{kind:?}");
                    assert!(answer.retry_after.is_some_and(|s| s >= 1), "{kind:?}");
                }
            }
        }
        assert_eq!(failure_answer(&SessionError::NoKeys), INTERNAL);
    }
}
