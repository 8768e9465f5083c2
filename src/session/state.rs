//! The state machine behind a [`Session`](super::Session): who the visitor is, what the
//! request changed, and what the response must do with the cookie.
//!
//! ```text
//! Unresolved ──resolve──▶ Anonymous (no cookie, or one that did not verify)
//!      │                      │ write creates a session under a fresh id
//!      └──resolve──▶ Known ◀──┘
//!                      │ found expired or deleted, or purged
//!                      ▼
//!                    Gone ──write──▶ Known (a fresh id; an old one is never revived)
//! ```
//!
//! Independently, [`Status`] records whether the store refreshed the session's lifetime or
//! failed (so nothing more is written and the cookie is left alone).
//!
//! The response sets the cookie only when the session was touched and `Known` says the
//! cookie is due: always for an id created by this request (a new session, a renewal, a
//! replacement for one found gone), and for a cookie that verified when
//! [`Verified::reissue_due`](super::cookie::Verified::reissue_due) says so (old format, older
//! secret, or issued a tenth of the TTL ago). Any other touch sends no `Set-Cookie`: the
//! browser keeps the cookie it has, whose expiry trails the store's sliding one by under 10%.

use std::cell::{OnceCell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;

use super::cookie::{CookieProblem, Keyring, RawCookie, unix_now};
use super::id::SessionId;
use super::signing::SigningKeys;
use super::store::{self, Applied, Presence, Record, SessionStore, StoreError, Update};
use super::{SessionConfig, SessionError};
use crate::telemetry::metrics;

/// Who the visitor is, decided on first use.
enum Identity {
    /// The cookie has not been looked at yet.
    Unresolved(Result<Option<RawCookie>, CookieProblem>),
    /// No usable session: no cookie, or one that did not verify.
    Anonymous,
    /// A session that exists in the store (or did when last checked).
    Known {
        /// Its id.
        id: SessionId,
        /// Whether a touch must send a freshly signed cookie: the browser has none for this
        /// id yet, or the one it sent is due for re-issue.
        reissue: bool,
    },
    /// This request's session was purged, or found expired or deleted: the browser's cookie
    /// is cleared unless a new session replaces it.
    Gone,
}

/// What the store calls of this request amount to, for the cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// No store call refreshed the session's lifetime.
    Untouched,
    /// The store refreshed the session's lifetime, so the cookie is re-issued if it is due.
    Touched,
    /// A store call failed: the request is answered 503 and nothing more is written.
    Failed,
}

struct State {
    identity: Identity,
    status: Status,
    /// The request carried our cookie, so a session found gone must clear it.
    had_cookie: bool,
    /// Fields as last read or written; `None` until something told us.
    cache: Option<Record>,
    /// Pending changes: `Some` sets a field, `None` removes it. Written in one step.
    changes: BTreeMap<String, Option<String>>,
}

impl State {
    /// Records that the lifetime was refreshed, unless the request has already failed.
    fn touch(&mut self) {
        if self.status != Status::Failed {
            self.status = Status::Touched;
        }
    }

    /// The session is no more: drop what was known about it.
    fn gone(&mut self) {
        self.identity = Identity::Gone;
        self.cache = Some(Record::new());
    }
}

/// What the response must do with the cookie.
#[derive(Debug, PartialEq, Eq)]
pub enum CookieAction {
    /// Send this freshly signed value with a Max-Age of the full TTL.
    Set(String),
    /// Tell the browser to drop the cookie.
    Clear,
}

/// One request's session: its state and what it needs to reach the store.
pub(super) struct SessionState {
    /// When the request's store work must be done by; set by the first store call.
    deadline: OnceCell<Instant>,
    store: Arc<dyn SessionStore>,
    keys: Arc<SigningKeys>,
    config: Arc<SessionConfig>,
    state: RefCell<State>,
}

impl SessionState {
    pub(super) fn new(
        store: Arc<dyn SessionStore>,
        keys: Arc<SigningKeys>,
        config: Arc<SessionConfig>,
        cookie: Result<Option<RawCookie>, CookieProblem>,
    ) -> Self {
        let had_cookie = !matches!(cookie, Ok(None));
        Self {
            deadline: OnceCell::new(),
            store,
            keys,
            config,
            state: RefCell::new(State {
                identity: Identity::Unresolved(cookie),
                status: Status::Untouched,
                had_cookie,
                cache: None,
                changes: BTreeMap::new(),
            }),
        }
    }

    /// A field's JSON text: pending, cached or loaded (which slides the lifetime).
    pub(super) async fn read(&self, field: &str) -> Result<Option<String>, SessionError> {
        let known = self.resolve().await?;
        let text = {
            let state = self.state.borrow();
            match state.changes.get(field) {
                Some(pending) => Some(pending.clone()),
                None => state.cache.as_ref().map(|c| c.get(field).cloned()),
            }
        };
        match (text, known) {
            (Some(text), _) => Ok(text),
            (None, None) => Ok(None),
            (None, Some(id)) => {
                let key = id.key(&self.config.key_prefix);
                let loaded = self.bounded(self.store.load(&key, self.config.ttl)).await?;
                let mut state = self.state.borrow_mut();
                match loaded {
                    Some(record) => {
                        let value = record.get(field).cloned();
                        state.cache = Some(record);
                        state.touch();
                        Ok(value)
                    }
                    None => {
                        // Expired or deleted: never revived; a later write gets a new id.
                        metrics::session_expired();
                        state.gone();
                        Ok(None)
                    }
                }
            }
        }
    }

    /// Stages a change (`None` removes the field), written at the end of the request.
    pub(super) fn stage(&self, field: &str, text: Option<String>) {
        self.state
            .borrow_mut()
            .changes
            .insert(field.to_owned(), text);
    }

    /// Moves the session to a new id: read the old one, create the new one with its data (and
    /// any pending changes), and only then delete the old one, so a failure never loses it.
    pub(super) async fn renew(&self) -> Result<(), SessionError> {
        let Some(old) = self.resolve().await? else {
            return Ok(());
        };
        let old_key = old.key(&self.config.key_prefix);
        let record = self
            .bounded(self.store.load(&old_key, self.config.ttl))
            .await?;
        {
            let mut state = self.state.borrow_mut();
            let Some(record) = record else {
                // Already gone: nothing to carry over, and nothing is revived.
                metrics::session_expired();
                state.gone();
                return Ok(());
            };
            state.identity = Identity::Anonymous;
            state.cache = None;
            // The old record is the new session's starting point; pending changes apply on top.
            for (field, value) in record {
                state.changes.entry(field).or_insert(Some(value));
            }
        }
        self.write(None).await?;
        self.bounded(self.store.delete(&old_key)).await?;
        Ok(())
    }

    /// Deletes the session now; the response clears the cookie.
    pub(super) async fn purge(&self) -> Result<(), SessionError> {
        let known = self.resolve().await?;
        {
            let mut state = self.state.borrow_mut();
            state.changes.clear();
            state.gone();
            if state.status == Status::Touched {
                state.status = Status::Untouched;
            }
        }
        if let Some(id) = known {
            let key = id.key(&self.config.key_prefix);
            if self.bounded(self.store.delete(&key)).await? {
                metrics::session_ended();
            }
        }
        Ok(())
    }

    /// Writes pending changes; called by the middleware once the handler is done.
    pub(super) async fn flush(&self) -> Result<(), SessionError> {
        let pending = {
            let state = self.state.borrow();
            state.status != Status::Failed && !state.changes.is_empty()
        };
        if pending {
            self.write(None).await?;
        }
        Ok(())
    }

    /// What the response should do with the cookie, after `flush`.
    pub(super) async fn cookie_action(&self) -> Result<Option<CookieAction>, SessionError> {
        let id = {
            let state = self.state.borrow();
            match (&state.identity, state.status) {
                (_, Status::Failed) => return Ok(None),
                (Identity::Known { id, reissue: true }, Status::Touched) => id.clone(),
                (Identity::Gone, _) if state.had_cookie => return Ok(Some(CookieAction::Clear)),
                // Includes a touch of a cookie not yet due: the browser keeps the one it has.
                _ => return Ok(None),
            }
        };
        let keys = self.keyring().await?;
        Ok(Some(CookieAction::Set(keys.sign(&id))))
    }

    /// The deadline for all the store work of this request, started by its first store call.
    fn deadline(&self) -> Instant {
        *self
            .deadline
            .get_or_init(|| Instant::now() + self.config.store_timeout)
    }

    /// Runs a call within the request's deadline, recording a failure so the middleware
    /// writes nothing more.
    async fn bounded<T, E>(
        &self,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, SessionError>
    where
        SessionError: From<E>,
    {
        let call = async { call.await.map_err(SessionError::from) };
        let result = store::within(self.deadline(), self.config.store_timeout, call).await;
        if result.is_err() {
            self.state.borrow_mut().status = Status::Failed;
        }
        result
    }

    /// The signing keys, within the request's deadline (fetching them may need the store).
    async fn keyring(&self) -> Result<Arc<Keyring>, SessionError> {
        // Most requests find the keys ready; they skip arming the deadline's timer.
        if let Some(ring) = self.keys.ready() {
            return Ok(ring);
        }
        self.bounded(self.keys.get(self.store.as_ref())).await
    }

    /// Looks at the cookie once, verifying its signature; returns the session id if any.
    async fn resolve(&self) -> Result<Option<SessionId>, SessionError> {
        let raw = {
            let mut state = self.state.borrow_mut();
            match &state.identity {
                Identity::Known { id, .. } => return Ok(Some(id.clone())),
                Identity::Anonymous | Identity::Gone => return Ok(None),
                Identity::Unresolved(Ok(Some(raw))) => raw.clone(),
                Identity::Unresolved(Ok(None)) => {
                    state.identity = Identity::Anonymous;
                    return Ok(None);
                }
                Identity::Unresolved(Err(problem)) => {
                    let problem = *problem;
                    ignore_cookie(&mut state, problem);
                    return Ok(None);
                }
            }
        };
        // The identity stays unresolved while the keys are fetched, so a concurrent call on
        // this session verifies the cookie too instead of seeing no session.
        let keys = self.keyring().await?;
        let verified = keys.verify(&raw);
        let mut state = self.state.borrow_mut();
        match (&state.identity, verified) {
            (Identity::Known { id, .. }, _) => Ok(Some(id.clone())),
            (Identity::Anonymous | Identity::Gone, _) => Ok(None),
            (Identity::Unresolved(_), Ok(verified)) => {
                let reissue = verified.reissue_due(unix_now(), self.config.ttl.as_secs());
                state.identity = Identity::Known {
                    id: verified.id.clone(),
                    reissue,
                };
                Ok(Some(verified.id))
            }
            (Identity::Unresolved(_), Err(problem)) => {
                ignore_cookie(&mut state, problem);
                Ok(None)
            }
        }
    }

    /// Writes pending changes (and an optional increment) in one step, creating the session
    /// under a fresh id if it does not exist. Returns the counter's new value.
    pub(super) async fn write(
        &self,
        incr: Option<(&str, i64)>,
    ) -> Result<Option<i64>, SessionError> {
        let mut current = self.resolve().await?;
        let changes = std::mem::take(&mut self.state.borrow_mut().changes);
        let set: Vec<(&str, &str)> = changes
            .iter()
            .filter_map(|(f, v)| Some((f.as_str(), v.as_deref()?)))
            .collect();
        let remove: Vec<&str> = changes
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(f, _)| f.as_str())
            .collect();
        // At most twice: the known session, then, if it is gone, a new one.
        for _ in 0..2 {
            let (id, presence) = match current.take() {
                Some(id) => (id, Presence::MustExist),
                None => {
                    if set.is_empty() && incr.is_none() {
                        // Nothing to create: an empty session does not exist.
                        return Ok(None);
                    }
                    (SessionId::generate(), Presence::New)
                }
            };
            let update = Update {
                presence,
                set: set.clone(),
                remove: if presence == Presence::New {
                    Vec::new()
                } else {
                    remove.clone()
                },
                incr,
                ttl: self.config.ttl,
            };
            let key = id.key(&self.config.key_prefix);
            match self.bounded(self.store.apply(&key, &update)).await? {
                Applied::Done(counter) => {
                    let mut state = self.state.borrow_mut();
                    // A session this request created or moved needs its first cookie.
                    let reissue = match (presence, &state.identity) {
                        (Presence::MustExist, Identity::Known { id: known, reissue })
                            if *known == id =>
                        {
                            *reissue
                        }
                        _ => true,
                    };
                    if presence == Presence::New {
                        metrics::session_created();
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
                    state.identity = Identity::Known { id, reissue };
                    state.touch();
                    return Ok(counter);
                }
                // Gone since the cookie was issued: start over under a new id.
                Applied::Missing => {
                    metrics::session_expired();
                    let mut state = self.state.borrow_mut();
                    state.identity = Identity::Gone;
                    state.cache = None;
                }
            }
        }
        // Only a store that reports a new session missing gets here.
        Err(SessionError::Store(StoreError::Protocol(
            "the store reported a new session missing".into(),
        )))
    }
}

/// A cookie that cannot be ours is logged once and treated as "no session".
fn ignore_cookie(state: &mut State, problem: CookieProblem) {
    metrics::bad_cookie(problem);
    crate::telemetry::in_request(
        || tracing::warn!(%problem, "suspicious session cookie ignored; continuing without a session"),
    );
    state.identity = Identity::Anonymous;
}
