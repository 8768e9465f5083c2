//! The middleware that gives each request a lazy [`Session`] and writes the cookie back.

use std::fmt::Write;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
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
                    // Built from checked parts (a token name, a base64url-and-digits value),
                    // so it is always a valid header value; the fallback never runs.
                    if let Ok(value) = HeaderValue::from_str(&set_cookie(&config, secure, &action))
                    {
                        res.headers_mut().append(header::SET_COOKIE, value);
                    }
                }
                Err(e) => return Ok(res.error_response(e).map_into_right_body()),
            }
            Ok(res.map_into_left_body())
        })
    }
}

/// The `Set-Cookie` value, written directly: the name is a checked token (configuration)
/// and the value base64url, dots and digits, so nothing needs quoting or encoding, and the
/// cookie crate's general formatter cost a tenth of a new session's CPU (README, Performance).
fn set_cookie(config: &SessionConfig, secure: bool, action: &CookieAction) -> String {
    let (value, max_age) = match action {
        CookieAction::Set(value) => (value.as_str(), config.ttl.as_secs()),
        CookieAction::Clear => ("", 0),
    };
    let mut header = String::with_capacity(config.cookie_name.len() + value.len() + 64);
    header.push_str(&config.cookie_name);
    header.push('=');
    header.push_str(value);
    header.push_str("; HttpOnly; SameSite=Lax");
    if secure {
        header.push_str("; Secure");
    }
    header.push_str("; Path=/; Max-Age=");
    // Writing to a String cannot fail.
    let _ = write!(header, "{max_age}");
    header
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::cookie::{Cookie, SameSite};

    fn config() -> SessionConfig {
        SessionConfig {
            cookie_name: "sid".into(),
            cookie_secure: crate::config::CookieSecure::Auto,
            on_cloud_foundry: false,
            ttl: std::time::Duration::from_secs(1800),
            key_prefix: "sess".into(),
            store_timeout: std::time::Duration::from_millis(500),
        }
    }

    #[test]
    fn the_header_is_what_the_cookie_crate_parses_back() {
        let config = config();
        for secure in [false, true] {
            let text = set_cookie(
                &config,
                secure,
                &CookieAction::Set("abc.0123456789.xyz_-".into()),
            );
            let cookie = Cookie::parse(text.as_str()).unwrap();
            assert_eq!(cookie.name(), config.cookie_name);
            assert_eq!(cookie.value(), "abc.0123456789.xyz_-");
            assert_eq!(cookie.http_only(), Some(true));
            assert_eq!(cookie.same_site(), Some(SameSite::Lax));
            assert_eq!(cookie.secure(), secure.then_some(true));
            assert_eq!(cookie.path(), Some("/"));
            let ttl = i64::try_from(config.ttl.as_secs()).unwrap();
            assert_eq!(cookie.max_age().map(|d| d.whole_seconds()), Some(ttl));
        }
        let cleared = Cookie::parse(set_cookie(&config, false, &CookieAction::Clear)).unwrap();
        assert_eq!(cleared.value(), "");
        assert_eq!(cleared.max_age().map(|d| d.whole_seconds()), Some(0));
    }
}
