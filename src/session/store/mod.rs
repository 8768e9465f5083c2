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
use crate::config::StoreSettings;

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

impl From<&StoreSettings> for StoreKind {
    fn from(settings: &StoreSettings) -> Self {
        match settings {
            StoreSettings::Redis(_) => StoreKind::Redis,
            StoreSettings::Memory { .. } => StoreKind::Memory,
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
    /// A new session under a fresh 256-bit random id. Stores do not check that the id is
    /// free: a collision is as likely as guessing a live session's id, and the check cost
    /// Redis about 2 µs per new session (README, Performance).
    New,
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
}

/// A store failure. The routes map each [`StoreErrorKind`] to a status; the log gets the
/// full chain.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No answer within the deadline (pool wait, connect and command together).
    #[error("the session store did not answer within {0:?}")]
    Timeout(Duration),
    /// The store could not be reached or the connection failed.
    #[error("the session store is unreachable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Nothing listens at the store's address: down, or the wrong host or port.
    #[error("the session store refused the connection")]
    ConnectionRefused(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store is up but refuses this service's commands for a reason an operator can name.
    #[error("the session store refuses service: {reason}")]
    Rejected {
        /// Why, as a closed set.
        reason: Rejection,
        /// The store's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store answered with an error this code has no name for (a bug, or foreign data).
    #[error("the session store refused a command")]
    Command(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store answered with something this code does not understand.
    #[error("the session store gave an unexpected reply: {0}")]
    Protocol(String),
}

/// Why a reachable store refuses commands; each one is fixed by a different person or wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// `OOM`: `maxmemory` reached and the eviction policy frees nothing (`noeviction`).
    #[error("Redis is out of memory (maxmemory reached, OOM) and refuses writes")]
    OutOfMemory,
    /// `WRONGPASS`, `NOAUTH` or a failed `AUTH`: the credentials are wrong or missing.
    #[error("Redis refused the credentials (WRONGPASS, NOAUTH or AUTH failed)")]
    Auth,
    /// `NOPERM`: the ACL user may not run a command or touch a key this service needs.
    #[error("the Redis ACL user lacks a permission this service needs (NOPERM)")]
    Permission,
    /// `READONLY`: connected to a replica, typically right after a failover.
    #[error("Redis is a read-only replica (READONLY), probably after a failover")]
    ReadOnly,
    /// `MASTERDOWN`: a replica that lost its primary and serves no stale data.
    #[error("the Redis replica lost its primary (MASTERDOWN)")]
    MasterDown,
    /// `LOADING`: Redis is loading its dataset after a restart.
    #[error("Redis is loading its dataset into memory (LOADING)")]
    Loading,
    /// `BUSY`: a script or module command is running past its time limit.
    #[error("Redis is busy running a long script (BUSY)")]
    Busy,
    /// `MISCONF`: persistence failed and `stop-writes-on-bgsave-error` refuses writes.
    #[error("Redis cannot persist to disk and refuses writes (MISCONF)")]
    Persistence,
}

/// The class of a store call's outcome, for statuses, log lines and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreErrorKind {
    /// The deadline passed.
    Timeout,
    /// The connection failed or dropped.
    Connection,
    /// Nothing listens at the address (TCP connection refused).
    Refused,
    /// See [`Rejection::OutOfMemory`].
    OutOfMemory,
    /// See [`Rejection::Auth`].
    Auth,
    /// See [`Rejection::Permission`].
    Permission,
    /// See [`Rejection::ReadOnly`].
    ReadOnly,
    /// See [`Rejection::MasterDown`].
    MasterDown,
    /// See [`Rejection::Loading`].
    Loading,
    /// See [`Rejection::Busy`].
    Busy,
    /// See [`Rejection::Persistence`].
    Persistence,
    /// An error reply with no name here.
    Command,
    /// A reply this code does not understand.
    Protocol,
}

impl StoreErrorKind {
    /// Every kind, for tables indexed by kind.
    pub const ALL: [StoreErrorKind; 13] = [
        StoreErrorKind::Timeout,
        StoreErrorKind::Connection,
        StoreErrorKind::Refused,
        StoreErrorKind::OutOfMemory,
        StoreErrorKind::Auth,
        StoreErrorKind::Permission,
        StoreErrorKind::ReadOnly,
        StoreErrorKind::MasterDown,
        StoreErrorKind::Loading,
        StoreErrorKind::Busy,
        StoreErrorKind::Persistence,
        StoreErrorKind::Command,
        StoreErrorKind::Protocol,
    ];

    /// A short lower-case label, stable for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            StoreErrorKind::Timeout => "timeout",
            StoreErrorKind::Connection => "connection",
            StoreErrorKind::Refused => "refused",
            StoreErrorKind::OutOfMemory => "oom",
            StoreErrorKind::Auth => "auth",
            StoreErrorKind::Permission => "permission",
            StoreErrorKind::ReadOnly => "readonly",
            StoreErrorKind::MasterDown => "masterdown",
            StoreErrorKind::Loading => "loading",
            StoreErrorKind::Busy => "busy",
            StoreErrorKind::Persistence => "misconf",
            StoreErrorKind::Command => "command",
            StoreErrorKind::Protocol => "protocol",
        }
    }

    /// Its position in [`StoreErrorKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl From<Rejection> for StoreErrorKind {
    fn from(reason: Rejection) -> Self {
        match reason {
            Rejection::OutOfMemory => StoreErrorKind::OutOfMemory,
            Rejection::Auth => StoreErrorKind::Auth,
            Rejection::Permission => StoreErrorKind::Permission,
            Rejection::ReadOnly => StoreErrorKind::ReadOnly,
            Rejection::MasterDown => StoreErrorKind::MasterDown,
            Rejection::Loading => StoreErrorKind::Loading,
            Rejection::Busy => StoreErrorKind::Busy,
            Rejection::Persistence => StoreErrorKind::Persistence,
        }
    }
}

impl StoreError {
    /// The class of this failure.
    pub fn kind(&self) -> StoreErrorKind {
        match self {
            StoreError::Timeout(_) => StoreErrorKind::Timeout,
            StoreError::Unavailable(_) => StoreErrorKind::Connection,
            StoreError::ConnectionRefused(_) => StoreErrorKind::Refused,
            StoreError::Rejected { reason, .. } => (*reason).into(),
            StoreError::Command(_) => StoreErrorKind::Command,
            StoreError::Protocol(_) => StoreErrorKind::Protocol,
        }
    }
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

    /// Checks the store answers and would accept this service's commands, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Returns the signing secret every instance shares, storing `candidate` if none exists yet.
    async fn shared_secret(&self, candidate: SecretString) -> Result<SecretString, StoreError>;
}

/// Runs `call` until `deadline`; past it, the call is dropped with a [`StoreError::Timeout`].
///
/// Every deadline that answers a user goes through here (the session handle's per-request
/// one and readiness); the only other timeout a store reports is a socket's, for callers
/// without a deadline. `limit` is the configured budget the error reports.
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
