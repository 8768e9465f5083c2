//! The outermost middleware: each request's id, span, access line and metrics.
//!
//! One layer does what tracing-actix-web's `TracingLogger` and a `from_fn` middleware did
//! as two, each with its own boxed future and request extension.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use tracing::Instrument;

use super::{access, metrics};

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_VCAP_REQUEST_ID: HeaderName = HeaderName::from_static("x-vcap-request-id");

/// Accepts an incoming id only if it is short, printable ASCII: it ends up in every log line.
fn acceptable(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    (!text.is_empty() && text.len() <= 128 && text.bytes().all(|b| b.is_ascii_graphic()))
        .then_some(text)
}

/// The id from `X-Vcap-Request-Id` (the Cloud Foundry router's) or `X-Request-Id`, else a
/// fresh UUID: one id per request, whichever way it came.
fn request_id_of(headers: &HeaderMap) -> String {
    headers
        .get(&X_VCAP_REQUEST_ID)
        .and_then(acceptable)
        .or_else(|| headers.get(&X_REQUEST_ID).and_then(acceptable))
        .map_or_else(fresh_request_id, str::to_owned)
}

/// A new UUID as text, in one allocation of its exact size (`to_string` grows its buffer).
fn fresh_request_id() -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut buf)
        .to_owned()
}

/// Gives each request an id and a span carrying it (so every line logged for the request
/// names it), then writes the access line, records the request's metrics and echoes the id
/// back as `X-Request-Id`. Outermost, so it sees the final status, refusals by the limits
/// and 404s included.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestLog;

impl<S, B> Transform<S, ServiceRequest> for RequestLog
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = RequestLogService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequestLogService {
            service: Rc::new(service),
        }))
    }
}

/// The per-worker service built by [`RequestLog`].
pub struct RequestLogService<S> {
    service: Rc<S>,
}

impl<S, B> Service<ServiceRequest> for RequestLogService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<ServiceResponse<B>, actix_web::Error>>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        let id = request_id_of(req.headers());
        let span = tracing::info_span!("request", request_id = %id);
        let method = req.method().clone();
        let inner = span.in_scope(|| self.service.call(req));
        Box::pin(async move {
            let outcome = inner.instrument(span.clone()).await;
            metrics::http_request(&method, &outcome, started);
            let mut res = match outcome {
                Ok(res) => res,
                Err(err) => {
                    span.in_scope(|| {
                        tracing::error!(target: "redis_sessions::access", reason = %err, "request failed before a response");
                    });
                    return Err(err);
                }
            };
            let req = res.request();
            access::write(&access::Access {
                method: req.method().as_str(),
                path: req.path(),
                status: res.status().as_u16(),
                duration: started.elapsed(),
                request_id: &id,
            });
            // Accepted ids are printable ASCII and UUIDs are hex, so this always succeeds.
            if let Ok(value) = HeaderValue::from_str(&id) {
                res.headers_mut().insert(X_REQUEST_ID.clone(), value);
            }
            Ok(res)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn the_routers_id_wins_then_the_clients_then_a_fresh_uuid() {
        let both = headers(&[
            ("x-vcap-request-id", "router-1"),
            ("x-request-id", "client-1"),
        ]);
        assert_eq!(request_id_of(&both), "router-1");
        assert_eq!(
            request_id_of(&headers(&[("x-request-id", "client-1")])),
            "client-1"
        );
        let fresh = request_id_of(&HeaderMap::new());
        assert!(uuid::Uuid::parse_str(&fresh).is_ok(), "{fresh}");
        assert_ne!(
            fresh,
            request_id_of(&HeaderMap::new()),
            "a new one each time"
        );
    }

    #[test]
    fn an_oversized_or_unprintable_id_is_replaced() {
        let long = "a".repeat(129);
        for bad in [long.as_str(), "has space"] {
            let id = request_id_of(&headers(&[("x-request-id", bad)]));
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{bad:?} -> {id}");
        }
    }
}
