//! Sessions: a signed id in a cookie, the data in a store, changed atomically.
//!
//! ```text
//! request ─▶ SessionMiddleware ─▶ handler ──(Session::incr/get/insert…)──▶ SessionStore ─▶ Redis
//!              │ finds the cookie,                                            (one key per
//!              │ no store call yet                                             session, one
//!              ◀── flushes pending changes in one step, sets or clears the cookie  round trip)
//! ```

pub mod cookie;
mod handle;
pub mod id;
mod middleware;
pub mod signing;
mod state;
pub mod store;

use std::time::Duration;

use crate::config::{CookieSecure, Settings, StoreSettings};

pub use self::handle::Session;
pub use self::middleware::SessionMiddleware;
pub use self::signing::SigningKeys;
pub use self::state::CookieAction;
pub use self::store::{SessionStore, StoreError, StoreKind};

/// How sessions and their cookie behave.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Cookie name.
    pub cookie_name: String,
    /// When to set `Secure`.
    pub cookie_secure: CookieSecure,
    /// Whether we run on Cloud Foundry, where `auto` means `Secure`.
    pub on_cloud_foundry: bool,
    /// Sliding lifetime of a session and its cookie.
    pub ttl: Duration,
    /// Prefix of storage keys.
    pub key_prefix: String,
    /// Deadline for all the store work of one request: the limit that answers users.
    pub store_timeout: Duration,
}

impl From<&Settings> for SessionConfig {
    fn from(settings: &Settings) -> Self {
        Self {
            cookie_name: settings.session.cookie_name.clone(),
            cookie_secure: settings.session.cookie_secure,
            on_cloud_foundry: settings.platform.on_cloud_foundry,
            ttl: settings.session.ttl,
            key_prefix: settings.session.key_prefix.clone(),
            store_timeout: match &settings.store {
                StoreSettings::Redis(redis) => redis.timeout,
                StoreSettings::Memory { .. } => store::memory::DEADLINE,
            },
        }
    }
}

/// A session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The store failed or did not answer in time.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A value could not be turned into JSON.
    #[error("session field {field:?} could not be encoded")]
    Encode {
        /// The field.
        field: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value is not of the type asked for.
    #[error("session field {field:?} does not hold the type asked for")]
    Decode {
        /// The field.
        field: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// No random bytes from the OS for a signing key.
    #[error(transparent)]
    Random(#[from] id::RandomError),
    /// No signing key could be built.
    #[error("no session signing key is available")]
    NoKeys,
    /// A handler asked for a session on a route without the middleware.
    #[error("the session middleware is not installed on this route")]
    NotInstalled,
}
