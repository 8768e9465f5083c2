//! HTTP routes: the counter page and its stylesheet, its JSON API and the platform's health
//! checks.

mod api;
mod assets;
mod counter;
mod errors;
mod health;
mod throttle;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, web};

use crate::config::Settings;
use crate::session::{SessionStore, StoreKind};
use crate::views::{CounterPage, CounterTemplate};

pub use self::errors::{error_response, is_api_path, render_server_errors};

/// Facts about this instance that pages and the API report.
#[derive(Clone, Debug)]
pub struct AppInfo {
    /// The instance index, store and session lifetime.
    pub facts: CounterPage,
    /// The counter page, rendered but for the count.
    pub page: CounterTemplate,
}

impl From<&Settings> for AppInfo {
    fn from(settings: &Settings) -> Self {
        let facts = CounterPage {
            instance_index: settings.platform.instance_index,
            store: StoreKind::from(&settings.store),
            ttl_seconds: settings.session.ttl.as_secs(),
        };
        Self {
            facts,
            page: CounterTemplate::new(&facts),
        }
    }
}

/// What readiness needs: the store to ping and how long it may take.
#[derive(Clone)]
pub struct Readiness {
    /// The session store.
    pub store: Arc<dyn SessionStore>,
    /// The same per-request deadline that requests get (`REDIS_TIMEOUT_MS`).
    pub timeout: Duration,
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
            .default_service(wrong_method("GET, HEAD")),
    )
    .service(
        web::resource("/reset")
            .route(web::post().to(counter::reset))
            .default_service(wrong_method("POST")),
    )
    .service(
        web::resource("/api/visits")
            .route(web::post().to(api::visit))
            .default_service(wrong_method("POST")),
    )
    .service(
        web::resource("/api/session")
            .route(web::get().to(api::show))
            .route(web::head().to(api::head))
            .route(web::delete().to(api::forget))
            .default_service(wrong_method("GET, HEAD, DELETE")),
    )
    .service(
        web::resource(crate::views::STYLESHEET_PATH)
            .route(web::get().to(assets::stylesheet))
            .route(web::head().to(assets::stylesheet))
            .default_service(wrong_method("GET, HEAD")),
    )
    .service(
        web::resource("/health")
            .route(web::get().to(health::live))
            .route(web::head().to(health::live))
            .default_service(wrong_method("GET, HEAD")),
    )
    .service(
        web::resource("/ready")
            .route(web::get().to(health::ready))
            .route(web::head().to(health::ready))
            .default_service(wrong_method("GET, HEAD")),
    )
    .default_service(web::to(errors::not_found));
}

/// The fallback of a resource: 405 with `allow` listing the methods it does answer.
fn wrong_method(allow: &'static str) -> actix_web::Route {
    web::to(move |req: HttpRequest| async move { errors::method_not_allowed(&req, allow) })
}

/// Marks a response as private to this visitor: it reflects their session.
fn no_store(mut builder: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    builder.insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"));
    builder
}

/// The counter field in every session.
const VISITS: &str = "visits";
