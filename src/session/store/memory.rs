//! The embedded store: per-process, lost on restart, bounded, with the same semantics as Redis.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use secrecy::SecretString;

use super::{Applied, Presence, Record, SessionStore, StoreError, StoreKind, Update};
use crate::session::id::SessionKey;

/// The per-request deadline with the memory store: in-process calls cannot stall, so it only
/// guards against a bug (a lock held across an await, say).
pub const DEADLINE: Duration = Duration::from_secs(5);

/// Sessions in a bounded map, expired lazily and evicted soonest-to-expire first.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    max_sessions: usize,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<SessionKey, Entry>,
    /// Every session ordered by expiry, so eviction and sweeping are O(log n).
    by_expiry: BTreeSet<(Instant, SessionKey)>,
}

#[derive(Debug)]
struct Entry {
    fields: Record,
    expires_at: Instant,
}

impl Inner {
    /// Drops sessions whose time is up; cheap when there are none.
    fn sweep(&mut self, now: Instant) {
        while let Some((at, _)) = self.by_expiry.first() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = self.by_expiry.pop_first() {
                self.sessions.remove(&key);
            }
        }
    }

    fn remove(&mut self, key: &SessionKey) -> Option<Entry> {
        let entry = self.sessions.remove(key)?;
        self.by_expiry.remove(&(entry.expires_at, key.clone()));
        Some(entry)
    }

    fn set_expiry(&mut self, key: &SessionKey, at: Instant) {
        if let Some(entry) = self.sessions.get_mut(key) {
            self.by_expiry.remove(&(entry.expires_at, key.clone()));
            entry.expires_at = at;
            self.by_expiry.insert((at, key.clone()));
        }
    }
}

impl MemoryStore {
    /// An empty store holding at most `max_sessions` sessions.
    pub fn new(max_sessions: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_sessions: max_sessions.max(1),
        }
    }

    /// Number of live sessions, for tests and diagnostics.
    pub fn len(&self) -> usize {
        let mut inner = self.lock();
        inner.sweep(Instant::now());
        inner.sessions.len()
    }

    /// Whether no live session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing the whole store, so a poisoned lock is simply reused.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Memory
    }

    async fn load(&self, key: &SessionKey, ttl: Duration) -> Result<Option<Record>, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.sweep(now);
        if !inner.sessions.contains_key(key) {
            return Ok(None);
        }
        inner.set_expiry(key, now + ttl);
        Ok(inner.sessions.get(key).map(|e| e.fields.clone()))
    }

    async fn apply(&self, key: &SessionKey, update: &Update<'_>) -> Result<Applied, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.sweep(now);
        if update.presence == Presence::MustExist && !inner.sessions.contains_key(key) {
            return Ok(Applied::Missing);
        }
        // Validate the counter before changing anything, as Redis's script does: a failed
        // update must leave the session exactly as it was.
        let counter = match update.incr {
            Some((field, by)) => {
                let pending = update
                    .set
                    .iter()
                    .rev()
                    .find(|(f, _)| *f == field)
                    .map(|(_, v)| *v);
                let stored = inner
                    .sessions
                    .get(key)
                    .and_then(|e| e.fields.get(field))
                    .map(String::as_str);
                // A counter removed in the same update starts again from zero, as in Redis.
                let removed = update.remove.contains(&field);
                let current = match pending.or(if removed { None } else { stored }) {
                    None => 0,
                    Some(v) => v.parse::<i64>().map_err(|_| {
                        StoreError::Command(format!("field {field:?} is not an integer").into())
                    })?,
                };
                Some(current.checked_add(by).ok_or_else(|| {
                    StoreError::Command(format!("field {field:?} would overflow").into())
                })?)
            }
            None => None,
        };
        let mut fields = inner.remove(key).map(|e| e.fields).unwrap_or_default();
        for (field, value) in &update.set {
            fields.insert((*field).to_owned(), (*value).to_owned());
        }
        for field in &update.remove {
            fields.remove(*field);
        }
        if let (Some((field, _)), Some(n)) = (update.incr, counter) {
            fields.insert(field.to_owned(), n.to_string());
        }
        // Like a Redis hash, a session with no fields does not exist.
        if !fields.is_empty() {
            if inner.sessions.len() >= self.max_sessions {
                // Expired ones went in the sweep; what remains goes soonest-to-expire first,
                // which with sliding lifetimes is the least recently used.
                if let Some((_, victim)) = inner.by_expiry.pop_first() {
                    inner.sessions.remove(&victim);
                }
            }
            let expires_at = now + update.ttl;
            inner.by_expiry.insert((expires_at, key.clone()));
            inner
                .sessions
                .insert(key.clone(), Entry { fields, expires_at });
        }
        Ok(Applied::Done(counter))
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        inner.sweep(Instant::now());
        Ok(inner.remove(key).is_some())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn shared_secret(&self, candidate: SecretString) -> Result<SecretString, StoreError> {
        // Nothing is shared between processes, so the caller's random secret is the answer.
        Ok(candidate)
    }
}
