//! Liveness and readiness, polled by the platform.

use std::time::Instant;

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::Readiness;
use crate::session::store::within;

/// `GET /health`: the process is alive. Never touches Redis: a failing liveness check makes
/// Cloud Foundry restart the instance, which would not fix a Redis outage.
pub async fn live() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(json!({ "status": "UP" }))
}

/// `GET /ready`: the session store answers in time and would accept this service's commands
/// (for Redis: the ACL user's permissions), so traffic can be served.
pub async fn ready(readiness: web::Data<Readiness>) -> HttpResponse {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + readiness.timeout;
    let result = within(deadline, readiness.timeout, readiness.store.ping()).await;
    let latency_ms = (started.elapsed().as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
    let store = readiness.store.kind().as_str();
    let (status, body) = match result {
        Ok(()) => (
            actix_web::http::StatusCode::OK,
            json!({ "status": "UP", "checks": { store: { "status": "UP", "latency_ms": latency_ms } } }),
        ),
        Err(e) => {
            let kind = e.kind().label();
            crate::telemetry::in_request(
                || tracing::warn!(error.kind = kind, error.message = %e, error.chain = %crate::telemetry::error_chain(&e), "readiness check failed"),
            );
            (
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                json!({ "status": "DOWN", "checks": { store: { "status": "DOWN", "kind": kind, "reason": e.to_string() } } }),
            )
        }
    };
    HttpResponse::build(status)
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(body)
}
