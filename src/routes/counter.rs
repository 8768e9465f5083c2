//! The counter page and its "Forget me" button.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

use super::{AppInfo, Readiness, VISITS, no_store};
use crate::session::{Session, SessionError};

/// `GET /`: counts the visit in one store round trip and shows the count.
pub async fn page(
    session: Session,
    info: web::Data<AppInfo>,
) -> Result<HttpResponse, SessionError> {
    let visits = session.incr(VISITS, 1).await?;
    Ok(no_store(HttpResponse::Ok())
        .content_type("text/html; charset=utf-8")
        .body(info.page.render(visits)))
}

/// `HEAD /`: the headers `GET /` would get, without counting a visit, touching the session
/// or setting a cookie; a 503 when the store would fail the `GET`, so monitors see outages.
pub async fn head(readiness: web::Data<Readiness>) -> Result<HttpResponse, SessionError> {
    readiness.store.ping().await?;
    Ok(no_store(HttpResponse::Ok())
        .content_type("text/html; charset=utf-8")
        .body(actix_web::body::None::new()))
}

/// `POST /reset`: forgets the visitor and sends them back to a fresh count.
pub async fn reset(session: Session) -> Result<HttpResponse, SessionError> {
    session.purge().await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/"))
        .finish())
}
