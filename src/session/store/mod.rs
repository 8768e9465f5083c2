//! Where sessions live: one trait, a Redis and an in-memory implementation.
//!
//! Every operation names exactly one key, so each maps to a single Redis Cluster slot, and
//! every change is applied by the store itself in one step: the application never reads a
//! value, changes it and writes it back, which is how other session libraries lose updates.

pub mod memory;
pub mod redis;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;

use super::id::SessionKey;

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;

/// A session's fields as stored: names to JSON texts.
pub type Record = HashMap<String, String>;

/// Which kind of store serves sessions; shown on the page and in the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// Shared Redis.
    Redis,
    /// The embedded per-process store.
    Memory,
}

impl StoreKind {
    /// The lower-case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Redis => "redis",
            StoreKind::Memory => "memory",
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an update may create the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// The session must already exist; a missing one is reported, never revived.
    MustExist,
    /// The session must not exist yet (a fresh id).
    MustBeNew,
}

/// A change to one session, applied atomically by the store.
#[derive(Debug)]
pub struct Update<'a> {
    /// Whether the session must exist or be new.
    pub presence: Presence,
    /// Fields to set, as JSON texts.
    pub set: Vec<(&'a str, &'a str)>,
    /// Fields to remove.
    pub remove: Vec<&'a str>,
    /// A counter field to add to, after the sets and removes.
    pub incr: Option<(&'a str, i64)>,
    /// The lifetime the session gets from now.
    pub ttl: Duration,
}

/// What an update did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Applied; carries the counter's new value when the update incremented one.
    Done(Option<i64>),
    /// `MustExist`, but the session is gone (expired, deleted or purged).
    Missing,
    /// `MustBeNew`, but the key is taken.
    Exists,
}

/// A store failure. Requests answer 503 for these; the log gets the full chain.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No answer within the deadline (pool wait, connect and command together).
    #[error("the session store did not answer within {0:?}")]
    Timeout(Duration),
    /// The store could not be reached or the connection failed.
    #[error("the session store is unreachable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store answered with an error.
    #[error("the session store refused a command")]
    Command(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store answered with something this code does not understand.
    #[error("the session store gave an unexpected reply: {0}")]
    Protocol(String),
}

/// Storage of sessions; implementations must apply each call atomically on one key.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Which kind of store this is.
    fn kind(&self) -> StoreKind;

    /// Reads a session and slides its lifetime; `None` if it does not exist.
    async fn load(&self, key: &SessionKey, ttl: Duration) -> Result<Option<Record>, StoreError>;

    /// Applies a change in one atomic step (one Redis round trip).
    async fn apply(&self, key: &SessionKey, update: &Update<'_>) -> Result<Applied, StoreError>;

    /// Removes a session; `true` if it existed.
    async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError>;

    /// Checks the store answers, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Returns the signing secret every instance shares, storing `candidate` if none exists yet.
    async fn shared_secret(&self, candidate: SecretString) -> Result<SecretString, StoreError>;
}

/// Runs `call` until `deadline`; past it, the call is dropped and this is the one place a
/// [`StoreError::Timeout`] is made. `limit` is the configured budget the error reports.
pub async fn within<T, E: From<StoreError>>(
    deadline: tokio::time::Instant,
    limit: Duration,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    match tokio::time::timeout_at(deadline, call).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Timeout(limit).into()),
    }
}
