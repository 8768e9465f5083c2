//! The typed session handle that handlers use; it hides cookies, ids and the store.

use std::cell::{OnceCell, RefCell};
use std::collections::BTreeMap;
use std::future::{Future, Ready, ready};
use std::rc::Rc;
use std::sync::Arc;

use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload};
use serde::{Serialize, de::DeserializeOwned};

use tokio::time::{Instant, timeout_at};

use super::cookie::{CookieProblem, Keyring, RawCookie};
use super::id::SessionId;
use super::keys::Keys;
use super::store::{Applied, Presence, Record, SessionStore, StoreError, Update};
use super::{SessionConfig, SessionError};

/// A visitor's session. Loaded lazily: a handler that never touches it costs no store call.
#[derive(Clone)]
pub struct Session(Rc<Inner>);

struct Inner {
    /// When the request's store work must be done by; set by the first store call.
    deadline: OnceCell<Instant>,
    store: Arc<dyn SessionStore>,
    keys: Arc<Keys>,
    config: Arc<SessionConfig>,
    state: RefCell<State>,
}

/// Who the visitor is, decided on first use.
enum Identity {
    /// The cookie has not been looked at yet.
    Unresolved(Result<Option<RawCookie>, CookieProblem>),
    /// No usable session.
    Anonymous,
    /// A session that exists in the store (or did when last checked).
    Known(SessionId),
}

struct State {
    identity: Identity,
    /// Fields as last read or written; `None` until something told us.
    cache: Option<Record>,
    /// Pending changes: `Some` sets a field, `None` removes it. Written in one step.
    changes: BTreeMap<String, Option<String>>,
    /// The store refreshed the session's lifetime, so the cookie's Max-Age is renewed too.
    touched: bool,
    /// The request carried our cookie, so a purge must clear it.
    had_cookie: bool,
    /// The cookie as received, when it is still the right one to send back.
    reusable_cookie: Option<String>,
    /// A store call failed: the request is answered 503 and nothing more is written.
    failed: bool,
}

/// What the response must do with the cookie.
#[derive(Debug, PartialEq, Eq)]
pub enum CookieAction {
    /// Send this signed value with a fresh Max-Age.
    Set(String),
    /// Tell the browser to drop the cookie.
    Clear,
}

impl Session {
    pub(crate) fn new(
        store: Arc<dyn SessionStore>,
        keys: Arc<Keys>,
        config: Arc<SessionConfig>,
        cookie: Result<Option<RawCookie>, CookieProblem>,
    ) -> Self {
        let had_cookie = !matches!(cookie, Ok(None));
        Self(Rc::new(Inner {
            deadline: OnceCell::new(),
            store,
            keys,
            config,
            state: RefCell::new(State {
                identity: Identity::Unresolved(cookie),
                cache: None,
                changes: BTreeMap::new(),
                touched: false,
                had_cookie,
                reusable_cookie: None,
                failed: false,
            }),
        }))
    }

    /// Reads a field; `None` if it is unset or there is no session. Never creates a session.
    pub async fn get<T: DeserializeOwned>(&self, field: &str) -> Result<Option<T>, SessionError> {
        let known = self.resolve().await?;
        let text = {
            let state = self.0.state.borrow();
            match state.changes.get(field) {
                Some(pending) => Some(pending.clone()),
                None => state.cache.as_ref().map(|c| c.get(field).cloned()),
            }
        };
        let text = match (text, known) {
            (Some(text), _) => text,
            (None, None) => None,
            (None, Some(id)) => {
                let key = id.key(&self.0.config.key_prefix);
                let loaded = self
                    .bounded(self.0.store.load(&key, self.0.config.ttl))
                    .await?;
                let mut state = self.0.state.borrow_mut();
                match loaded {
                    Some(record) => {
                        let value = record.get(field).cloned();
                        state.cache = Some(record);
                        state.touched = true;
                        value
                    }
                    None => {
                        // Expired or deleted: never revived; a later write gets a new id.
                        state.identity = Identity::Anonymous;
                        state.cache = Some(Record::new());
                        None
                    }
                }
            }
        };
        text.map(|t| {
            serde_json::from_str(&t).map_err(|source| SessionError::Decode {
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
        self.0
            .state
            .borrow_mut()
            .changes
            .insert(field.to_owned(), Some(text));
        Ok(())
    }

    /// Removes a field at the end of the request.
    pub fn remove(&self, field: &str) {
        self.0
            .state
            .borrow_mut()
            .changes
            .insert(field.to_owned(), None);
    }

    /// Adds `by` to a counter inside the store and returns the new value.
    ///
    /// One round trip: it also writes pending changes, refreshes the lifetime and checks that
    /// the session still exists. Concurrent increments, from any instance, are never lost.
    pub async fn incr(&self, field: &str, by: i64) -> Result<i64, SessionError> {
        match self.write(Some((field, by))).await? {
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
        let Some(old) = self.resolve().await? else {
            return Ok(());
        };
        let old_key = old.key(&self.0.config.key_prefix);
        let record = self
            .bounded(self.0.store.load(&old_key, self.0.config.ttl))
            .await?;
        {
            let mut state = self.0.state.borrow_mut();
            state.identity = Identity::Anonymous;
            state.reusable_cookie = None;
            let Some(record) = record else {
                // Already gone: nothing to carry over, and nothing is revived.
                state.cache = Some(Record::new());
                return Ok(());
            };
            state.cache = None;
            // The old record is the new session's starting point; pending changes apply on top.
            for (field, value) in record {
                state.changes.entry(field).or_insert(Some(value));
            }
        }
        self.write(None).await?;
        self.bounded(self.0.store.delete(&old_key)).await?;
        Ok(())
    }

    /// Deletes the session now and clears the cookie.
    pub async fn purge(&self) -> Result<(), SessionError> {
        let known = self.resolve().await?;
        {
            let mut state = self.0.state.borrow_mut();
            state.changes.clear();
            state.cache = Some(Record::new());
            state.identity = Identity::Anonymous;
            state.reusable_cookie = None;
            state.touched = false;
        }
        if let Some(id) = known {
            let key = id.key(&self.0.config.key_prefix);
            self.bounded(self.0.store.delete(&key)).await?;
        }
        Ok(())
    }

    /// Writes pending changes; called by the middleware once the handler is done.
    pub(crate) async fn flush(&self) -> Result<(), SessionError> {
        let pending = {
            let state = self.0.state.borrow();
            !state.failed && !state.changes.is_empty()
        };
        if pending {
            self.write(None).await?;
        }
        Ok(())
    }

    /// What the response should do with the cookie, after `flush`.
    pub(crate) async fn cookie_action(&self) -> Result<Option<CookieAction>, SessionError> {
        let (id, reusable, had_cookie) = {
            let state = self.0.state.borrow();
            if state.failed {
                return Ok(None);
            }
            let id = match (&state.identity, state.touched) {
                (Identity::Known(id), true) => Some(id.clone()),
                _ => None,
            };
            (id, state.reusable_cookie.clone(), state.had_cookie)
        };
        match id {
            Some(_) if reusable.is_some() => Ok(reusable.map(CookieAction::Set)),
            Some(id) => {
                let keys = self.keys().await?;
                Ok(Some(CookieAction::Set(keys.sign(&id))))
            }
            None if had_cookie && self.is_gone() => Ok(Some(CookieAction::Clear)),
            None => Ok(None),
        }
    }

    /// Whether the session was purged or found gone in this request.
    fn is_gone(&self) -> bool {
        let state = self.0.state.borrow();
        matches!(state.identity, Identity::Anonymous) && state.cache.is_some()
    }

    /// The deadline for all the store work of this request, started by its first store call.
    fn deadline(&self) -> Instant {
        *self
            .0
            .deadline
            .get_or_init(|| Instant::now() + self.0.config.store_timeout)
    }

    /// Runs a store call within the request's deadline, recording a failure so the
    /// middleware writes nothing more.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, SessionError> {
        let result = match timeout_at(self.deadline(), call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(self.0.config.store_timeout)),
        };
        result.map_err(|e| {
            self.0.state.borrow_mut().failed = true;
            SessionError::Store(e)
        })
    }

    /// The signing keys, within the request's deadline (fetching them may need the store).
    async fn keys(&self) -> Result<Arc<Keyring>, SessionError> {
        let result = match timeout_at(self.deadline(), self.0.keys.get(self.0.store.as_ref())).await
        {
            Ok(result) => result,
            Err(_) => Err(SessionError::Store(StoreError::Timeout(
                self.0.config.store_timeout,
            ))),
        };
        if result.is_err() {
            self.0.state.borrow_mut().failed = true;
        }
        result
    }

    /// Looks at the cookie once, verifying its signature; returns the session id if any.
    async fn resolve(&self) -> Result<Option<SessionId>, SessionError> {
        let raw = {
            let mut state = self.0.state.borrow_mut();
            match &state.identity {
                Identity::Known(id) => return Ok(Some(id.clone())),
                Identity::Anonymous => return Ok(None),
                Identity::Unresolved(Ok(Some(raw))) => raw.clone(),
                Identity::Unresolved(Ok(None)) => {
                    state.identity = Identity::Anonymous;
                    return Ok(None);
                }
                Identity::Unresolved(Err(problem)) => {
                    tracing::warn!(%problem, "suspicious session cookie ignored; continuing without a session");
                    state.identity = Identity::Anonymous;
                    return Ok(None);
                }
            }
        };
        // The identity stays unresolved while the keys are fetched, so a concurrent call on
        // this session verifies the cookie too instead of seeing no session.
        let keys = self.keys().await?;
        let verified = keys.verify(&raw);
        let mut state = self.0.state.borrow_mut();
        match (&state.identity, verified) {
            (Identity::Known(id), _) => Ok(Some(id.clone())),
            (Identity::Anonymous, _) => Ok(None),
            (Identity::Unresolved(_), Ok(verified)) => {
                if !verified.needs_resign {
                    state.reusable_cookie = Some(raw.expose().to_owned());
                }
                state.identity = Identity::Known(verified.id.clone());
                Ok(Some(verified.id))
            }
            (Identity::Unresolved(_), Err(problem)) => {
                tracing::warn!(%problem, "suspicious session cookie ignored; continuing without a session");
                state.identity = Identity::Anonymous;
                Ok(None)
            }
        }
    }

    /// Writes pending changes (and an optional increment) in one step, creating the session
    /// under a fresh id if it does not exist. Returns the counter's new value.
    async fn write(&self, incr: Option<(&str, i64)>) -> Result<Option<i64>, SessionError> {
        let mut current = self.resolve().await?;
        let changes = std::mem::take(&mut self.0.state.borrow_mut().changes);
        let set: Vec<(&str, &str)> = changes
            .iter()
            .filter_map(|(f, v)| Some((f.as_str(), v.as_deref()?)))
            .collect();
        let remove: Vec<&str> = changes
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(f, _)| f.as_str())
            .collect();
        // A 256-bit id collides only by miracle, but a bounded retry costs nothing.
        for _ in 0..4 {
            let (id, presence) = match current.take() {
                Some(id) => (id, Presence::MustExist),
                None => {
                    if set.is_empty() && incr.is_none() {
                        // Nothing to create: an empty session does not exist.
                        return Ok(None);
                    }
                    (SessionId::generate()?, Presence::MustBeNew)
                }
            };
            let update = Update {
                presence,
                set: set.clone(),
                remove: if presence == Presence::MustBeNew {
                    Vec::new()
                } else {
                    remove.clone()
                },
                incr,
                ttl: self.0.config.ttl,
            };
            let key = id.key(&self.0.config.key_prefix);
            match self.bounded(self.0.store.apply(&key, &update)).await? {
                Applied::Done(counter) => {
                    let mut state = self.0.state.borrow_mut();
                    if presence == Presence::MustBeNew {
                        state.reusable_cookie = None;
                        state.cache = Some(Record::new());
                    }
                    if let Some(cache) = state.cache.as_mut() {
                        for (field, value) in &set {
                            cache.insert((*field).to_owned(), (*value).to_owned());
                        }
                        for field in &remove {
                            cache.remove(*field);
                        }
                        if let (Some((field, _)), Some(n)) = (incr, counter) {
                            cache.insert(field.to_owned(), n.to_string());
                        }
                    }
                    state.identity = Identity::Known(id);
                    state.touched = true;
                    return Ok(counter);
                }
                // Gone since the cookie was issued: start over under a new id.
                Applied::Missing => {
                    let mut state = self.0.state.borrow_mut();
                    state.cache = None;
                    state.reusable_cookie = None;
                }
                Applied::Exists => {}
            }
        }
        Err(SessionError::Store(StoreError::Protocol(
            "could not find a free session id".into(),
        )))
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
