//! The pages' stylesheet, cached by browsers for as long as its URL stays the same.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

use crate::views::{STYLESHEET, stylesheet_version};

/// For the URL the pages link: its version names this very stylesheet, so it never changes.
const FOREVER: &str = "public, max-age=31536000, immutable";

/// For any other URL, say a version from a newer release answered by an instance still on
/// the old one during a rolling deploy: kept, but checked again before each use, so the old
/// stylesheet is not stuck under the new version's URL.
const REVALIDATE: &str = "public, no-cache";

/// `GET /style.css`: the stylesheet, whatever the query; cached for good only under the
/// version the pages link.
pub async fn stylesheet(req: HttpRequest) -> HttpResponse {
    let current = req
        .query_string()
        .split('&')
        .any(|pair| pair.strip_prefix("v=") == Some(stylesheet_version()));
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((
            header::CACHE_CONTROL,
            if current { FOREVER } else { REVALIDATE },
        ))
        .body(STYLESHEET)
}
