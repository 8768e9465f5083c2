//! Error answers: JSON for the API and probes, a small page elsewhere, never internals.

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::header;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;

use crate::session::SessionError;
use crate::telemetry::error_chain;
use crate::views::error_page;

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
    let message: &str = match res.response().error() {
        Some(err) => {
            let unavailable = err
                .as_error::<SessionError>()
                .is_some_and(SessionError::is_unavailable);
            match err.as_error::<SessionError>() {
                Some(e) => tracing::error!(
                    error.message = %e,
                    error.chain = %error_chain(e),
                    "request failed"
                ),
                None => tracing::error!(error.message = %err, "request failed"),
            }
            if unavailable {
                "session store unavailable, please retry"
            } else {
                "internal error"
            }
        }
        // Handlers that built their own answer (such as /ready's 503) keep it.
        None => return Ok(ErrorHandlerResponse::Response(res.map_into_left_body())),
    };
    let path = res.request().path().to_owned();
    let response = error_response(&path, status, message);
    let res: ServiceResponse<EitherBody<B, BoxBody>> =
        res.into_response(response).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}
