//! The outermost middleware: each request's id, access line and metrics, and the span that
//! names the request on every line logged while serving it.
//!
//! One layer does what tracing-actix-web's `TracingLogger` and a `from_fn` middleware did
//! as two, each with its own boxed future and request extension.
//!
//! The span is made only when a line is logged ([`in_request`]). Opening a tracing span for
//! every request, formatting its field and closing it again, and entering it on every poll,
//! cost about 0.7 µs of the 16 µs a request costs (README, Performance), for the few
//! requests that log anything besides their access line. Instead the request's id sits in a
//! thread-local while its future is polled: a worker thread polls one request at a time.

use std::cell::Cell;
use std::future::{Future, Ready, poll_fn, ready};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

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
fn request_id_of(headers: &HeaderMap) -> Rc<str> {
    headers
        .get(&X_VCAP_REQUEST_ID)
        .and_then(acceptable)
        .or_else(|| headers.get(&X_REQUEST_ID).and_then(acceptable))
        .map_or_else(fresh_request_id, Rc::from)
}

/// A new UUID as text, in one allocation of its exact size (`to_string` grows its buffer).
fn fresh_request_id() -> Rc<str> {
    let mut buf = uuid::Uuid::encode_buffer();
    Rc::from(&*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf))
}

thread_local! {
    /// The id of the request this worker thread is serving right now, if any.
    static CURRENT: Cell<Option<Rc<str>>> = const { Cell::new(None) };
}

/// Makes `id` the thread's current request until dropped, then restores the one before.
struct Serving(Option<Rc<str>>);

impl Serving {
    fn enter(id: &Rc<str>) -> Self {
        Self(CURRENT.replace(Some(Rc::clone(id))))
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        CURRENT.set(self.0.take());
    }
}

/// The span every line about a request is logged in: `request{request_id=…}`.
fn span_of(id: &str) -> tracing::Span {
    tracing::info_span!("request", request_id = %id)
}

/// Runs `log` inside the span of the request being served, so that the lines it logs name
/// the request as its access line does; outside a request it just runs `log`.
///
/// Every line logged while serving a request goes through this: the span is made here, on
/// demand, rather than for every request (see the module docs).
pub fn in_request<T>(log: impl FnOnce() -> T) -> T {
    let id = CURRENT.take();
    CURRENT.set(id.clone());
    match id {
        Some(id) => span_of(&id).in_scope(log),
        None => log(),
    }
}

/// Gives each request an id (which every line logged for the request names, see
/// [`in_request`]), then writes the access line, records the request's metrics and echoes
/// the id back as `X-Request-Id`. Outermost, so it sees the final status, refusals by the limits
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
        let method = req.method().clone();
        // The inner services start their work in `call`, so it is part of the request too.
        let inner = {
            let _serving = Serving::enter(&id);
            self.service.call(req)
        };
        Box::pin(async move {
            let mut inner = pin!(inner);
            let outcome = poll_fn(|cx| {
                let _serving = Serving::enter(&id);
                inner.as_mut().poll(cx)
            })
            .await;
            metrics::http_request(&method, &outcome, started);
            let mut res = match outcome {
                Ok(res) => res,
                Err(err) => {
                    span_of(&id).in_scope(|| {
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
        assert_eq!(&*request_id_of(&both), "router-1");
        assert_eq!(
            &*request_id_of(&headers(&[("x-request-id", "client-1")])),
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

    /// Log output, shared with the test.
    #[derive(Clone, Default)]
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_logged_while_serving_a_request_names_it_and_no_other_line_does() {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            in_request(|| tracing::warn!("before"));
            let (first, second): (Rc<str>, Rc<str>) = (Rc::from("req-1"), Rc::from("req-2"));
            {
                let _serving = Serving::enter(&first);
                in_request(|| tracing::warn!("in first"));
                {
                    let _serving = Serving::enter(&second);
                    in_request(|| tracing::warn!("in second"));
                }
                in_request(|| tracing::warn!("in first again"));
            }
            in_request(|| tracing::warn!("after"));
        });
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let line = |message: &str| {
            text.lines()
                .find(|l| l.ends_with(&format!(": {message}")))
                .unwrap_or_else(|| panic!("no line {message:?} in\n{text}"))
                .to_owned()
        };
        for (message, span) in [
            ("before", None),
            ("in first", Some("request{request_id=req-1}")),
            ("in second", Some("request{request_id=req-2}")),
            ("in first again", Some("request{request_id=req-1}")),
            ("after", None),
        ] {
            let line = line(message);
            match span {
                Some(span) => assert!(line.contains(span), "{line}"),
                None => assert!(!line.contains("request{"), "{line}"),
            }
        }
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
