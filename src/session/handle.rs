//! The typed session handle that handlers use; it hides cookies, ids and the store.
//!
//! The state behind it (who the visitor is, what changed, what happens to the cookie) lives
//! in [`state`](super::state).

use std::future::{Ready, ready};
use std::rc::Rc;
use std::sync::Arc;

use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload};
use serde::{Serialize, de::DeserializeOwned};

use super::cookie::{CookieProblem, RawCookie};
use super::signing::SigningKeys;
use super::state::{CookieAction, SessionState};
use super::store::{SessionStore, StoreError};
use super::{SessionConfig, SessionError};

/// A visitor's session. Loaded lazily: a handler that never touches it costs no store call.
#[derive(Clone)]
pub struct Session(Rc<SessionState>);

impl Session {
    pub(crate) fn new(
        store: Arc<dyn SessionStore>,
        keys: Arc<SigningKeys>,
        config: Arc<SessionConfig>,
        cookie: Result<Option<RawCookie>, CookieProblem>,
    ) -> Self {
        Self(Rc::new(SessionState::new(store, keys, config, cookie)))
    }

    /// Reads a field; `None` if it is unset or there is no session. Never creates a session.
    pub async fn get<T: DeserializeOwned>(&self, field: &str) -> Result<Option<T>, SessionError> {
        self.0
            .read(field)
            .await?
            .map(|text| {
                serde_json::from_str(&text).map_err(|source| SessionError::Decode {
                    field: field.to_owned(),
                    source,
                })
            })
            .transpose()
    }

    /// Sets a field; written with any other changes in one step at the end of the request.
    pub fn insert<T: Serialize>(&self, field: &str, value: T) -> Result<(), SessionError> {
        let text = serde_json::to_string(&value).map_err(|source| SessionError::Encode {
            field: field.to_owned(),
            source,
        })?;
        self.0.stage(field, Some(text));
        Ok(())
    }

    /// Removes a field at the end of the request.
    pub fn remove(&self, field: &str) {
        self.0.stage(field, None);
    }

    /// Adds `by` to a counter inside the store and returns the new value.
    ///
    /// One round trip: it also writes pending changes, refreshes the lifetime and checks that
    /// the session still exists. Concurrent increments, from any instance, are never lost.
    pub async fn incr(&self, field: &str, by: i64) -> Result<i64, SessionError> {
        match self.0.write(Some((field, by))).await? {
            Some(n) => Ok(n),
            None => Err(SessionError::Store(StoreError::Protocol(
                "the store did not return the counter".into(),
            ))),
        }
    }

    /// Gives the session a new id with the same data, so an id seen before (say, before a
    /// login) stops working.
    ///
    /// Three single-key steps, so each stays single-slot on a Redis Cluster, ordered so a
    /// failure never loses the session: read the old one, create the new one with its data
    /// (and any pending changes), and only then delete the old one.
    pub async fn renew(&self) -> Result<(), SessionError> {
        self.0.renew().await
    }

    /// Deletes the session now and clears the cookie.
    pub async fn purge(&self) -> Result<(), SessionError> {
        self.0.purge().await
    }

    /// Writes pending changes; called by the middleware once the handler is done.
    pub(crate) async fn flush(&self) -> Result<(), SessionError> {
        self.0.flush().await
    }

    /// What the response should do with the cookie, after `flush`.
    pub(crate) async fn cookie_action(&self) -> Result<Option<CookieAction>, SessionError> {
        self.0.cookie_action().await
    }
}

impl FromRequest for Session {
    type Error = SessionError;
    type Future = Ready<Result<Session, SessionError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Session>()
                .cloned()
                .ok_or(SessionError::NotInstalled),
        )
    }
}
