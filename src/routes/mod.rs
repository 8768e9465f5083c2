//! HTTP routes: the counter page, its JSON API and the platform's health checks.

mod api;
mod counter;
mod errors;
mod health;
mod throttle;

use std::sync::Arc;

use actix_web::{HttpRequest, web};

use crate::session::{SessionStore, StoreKind};

pub use self::errors::{error_response, is_api_path, render_server_errors};

/// Facts about this instance that pages and the API report.
#[derive(Clone, Debug)]
pub struct AppInfo {
    /// Index of this instance.
    pub instance_index: u32,
    /// Where sessions are kept.
    pub store: StoreKind,
    /// Session lifetime in seconds.
    pub ttl_seconds: u64,
}

/// What readiness needs: the store to ping.
#[derive(Clone)]
pub struct Readiness {
    /// The session store.
    pub store: Arc<dyn SessionStore>,
}

/// Registers every route; anything else is a 404, a known path with the wrong method a 405.
///
/// Every `GET` has a `HEAD` (for `curl -I` and uptime monitors). None of them counts a visit
/// or touches the session, so none sets a cookie.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/")
            .route(web::get().to(counter::page))
            .route(web::head().to(counter::head))
            .default_service(web::to(|req: HttpRequest| async move {
                errors::method_not_allowed(&req, "GET, HEAD")
            })),
    )
    .service(
        web::resource("/reset")
            .route(web::post().to(counter::reset))
            .default_service(web::to(|req: HttpRequest| async move {
                errors::method_not_allowed(&req, "POST")
            })),
    )
    .service(
        web::resource("/api/visits")
            .route(web::post().to(api::visit))
            .default_service(web::to(|req: HttpRequest| async move {
                errors::method_not_allowed(&req, "POST")
            })),
    )
    .service(
        web::resource("/api/session")
            .route(web::get().to(api::show))
            .route(web::head().to(api::head))
            .route(web::delete().to(api::forget))
            .default_service(web::to(|req: HttpRequest| async move {
                errors::method_not_allowed(&req, "GET, HEAD, DELETE")
            })),
    )
    .service(
        web::resource("/health")
            .route(web::get().to(health::live))
            .route(web::head().to(health::live))
            .default_service(web::to(|req: HttpRequest| async move {
                errors::method_not_allowed(&req, "GET, HEAD")
            })),
    )
    .service(
        web::resource("/ready")
            .route(web::get().to(health::ready))
            .route(web::head().to(health::ready))
            .default_service(web::to(|req: HttpRequest| async move {
                errors::method_not_allowed(&req, "GET, HEAD")
            })),
    )
    .default_service(web::to(errors::not_found));
}

/// Marks a response as private to this visitor: it reflects their session.
fn no_store(mut builder: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    builder.insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"));
    builder
}

/// The counter field in every session.
const VISITS: &str = "visits";
