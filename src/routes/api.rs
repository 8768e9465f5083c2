//! The JSON API over the same session.

use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::{AppInfo, Readiness, VISITS, no_store};
use crate::session::{Session, SessionError};

/// The body of every visits answer.
#[derive(Debug, Serialize)]
struct Visits {
    visits: i64,
    instance_index: u32,
    store: &'static str,
    ttl_seconds: u64,
}

fn visits_response(visits: i64, info: &AppInfo) -> HttpResponse {
    no_store(HttpResponse::Ok()).json(Visits {
        visits,
        instance_index: info.facts.instance_index,
        store: info.facts.store.as_str(),
        ttl_seconds: info.facts.ttl_seconds,
    })
}

/// `POST /api/visits`: counts a visit and returns the new count.
pub async fn visit(
    session: Session,
    info: web::Data<AppInfo>,
) -> Result<HttpResponse, SessionError> {
    let visits = session.incr(VISITS, 1).await?;
    Ok(visits_response(visits, &info))
}

/// `GET /api/session`: the count so far, without counting and without creating a session.
pub async fn show(
    session: Session,
    info: web::Data<AppInfo>,
) -> Result<HttpResponse, SessionError> {
    let visits = session.get::<i64>(VISITS).await?.unwrap_or(0);
    Ok(visits_response(visits, &info))
}

/// `HEAD /api/session`: the headers `GET` would get, without reading or renewing the session
/// and without a cookie; a 503 when the store would fail the `GET`.
pub async fn head(readiness: web::Data<Readiness>) -> Result<HttpResponse, SessionError> {
    readiness.store.ping().await?;
    Ok(no_store(HttpResponse::Ok())
        .content_type("application/json")
        .body(actix_web::body::None::new()))
}

/// `DELETE /api/session`: removes the session and clears the cookie.
pub async fn forget(session: Session) -> Result<HttpResponse, SessionError> {
    session.purge().await?;
    Ok(HttpResponse::NoContent().finish())
}
