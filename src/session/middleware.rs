//! The middleware that gives each request a lazy [`Session`] and writes the cookie back.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::cookie::{Cookie, SameSite, time};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{self, HeaderValue};
use actix_web::{Error, HttpMessage};

use super::SessionConfig;
use super::cookie::find_session_cookie;
use super::handle::Session;
use super::signing::SigningKeys;
use super::state::CookieAction;
use super::store::SessionStore;
use crate::config::CookieSecure;

/// Session middleware, generic over the store; see the module docs for the request path.
pub struct SessionMiddleware<S> {
    store: Arc<S>,
    keys: Arc<SigningKeys>,
    config: Arc<SessionConfig>,
}

impl<S: SessionStore> SessionMiddleware<S> {
    /// Sessions kept in `store`, signed with `keys`.
    pub fn new(store: Arc<S>, keys: Arc<SigningKeys>, config: SessionConfig) -> Self {
        Self {
            store,
            keys,
            config: Arc::new(config),
        }
    }
}

impl<S, Svc, B> Transform<Svc, ServiceRequest> for SessionMiddleware<S>
where
    S: SessionStore,
    Svc: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = SessionService<Svc>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: Svc) -> Self::Future {
        let store: Arc<dyn SessionStore> = self.store.clone();
        ready(Ok(SessionService {
            service: Rc::new(service),
            store,
            keys: self.keys.clone(),
            config: self.config.clone(),
        }))
    }
}

/// The per-worker service built by [`SessionMiddleware`].
pub struct SessionService<Svc> {
    service: Rc<Svc>,
    store: Arc<dyn SessionStore>,
    keys: Arc<SigningKeys>,
    config: Arc<SessionConfig>,
}

impl<Svc, B> Service<ServiceRequest> for SessionService<Svc>
where
    Svc: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Error>>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        // Only the header is looked at here; the signature is checked, and the store asked,
        // when a handler first uses the session.
        let cookie = find_session_cookie(req.headers(), &self.config.cookie_name);
        let secure = match self.config.cookie_secure {
            CookieSecure::Always => true,
            CookieSecure::Never => false,
            CookieSecure::Auto => {
                self.config.on_cloud_foundry
                    || req
                        .headers()
                        .get("x-forwarded-proto")
                        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"))
            }
        };
        let session = Session::new(
            self.store.clone(),
            self.keys.clone(),
            self.config.clone(),
            cookie,
        );
        req.extensions_mut().insert(session.clone());
        let service = self.service.clone();
        let config = self.config.clone();

        Box::pin(async move {
            let mut res = service.call(req).await?;
            let action = match session.flush().await {
                Ok(()) => session.cookie_action().await,
                Err(e) => Err(e),
            };
            match action {
                Ok(None) => {}
                Ok(Some(action)) => {
                    let cookie = build_cookie(&config, secure, action);
                    // A cookie value is always a valid header value; the fallback never runs.
                    if let Ok(value) = HeaderValue::from_str(&cookie.encoded().to_string()) {
                        res.headers_mut().append(header::SET_COOKIE, value);
                    }
                }
                Err(e) => return Ok(res.error_response(e).map_into_right_body()),
            }
            Ok(res.map_into_left_body())
        })
    }
}

fn build_cookie(config: &SessionConfig, secure: bool, action: CookieAction) -> Cookie<'static> {
    let (value, max_age) = match action {
        // SESSION_TTL_SECONDS is at most a year, so the fallback is never used.
        CookieAction::Set(value) => (
            value,
            time::Duration::seconds(i64::try_from(config.ttl.as_secs()).unwrap_or(i64::MAX)),
        ),
        CookieAction::Clear => (String::new(), time::Duration::ZERO),
    };
    Cookie::build(config.cookie_name.clone(), value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .max_age(max_age)
        .finish()
}
