//! The configuration error: one line, naming the variable, printed before exiting.

use super::session::MIN_SECRET_BYTES;
use super::{RedisUrlError, VcapError};

/// A configuration problem; its `Display` is the one line printed before exiting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable has a value of the wrong form.
    #[error("{var} must be {expected}, got {got:?}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// What a good value looks like.
        expected: &'static str,
        /// The value given (never for secrets).
        got: String,
    },
    /// Variables that contradict each other, or one that needs another.
    #[error("{var} {why}")]
    Conflict {
        /// The variable to change.
        var: &'static str,
        /// What is wrong with the combination.
        why: &'static str,
    },
    /// `VCAP_APPLICATION` is not JSON.
    #[error("VCAP_APPLICATION is not valid JSON: {0}")]
    VcapApplication(#[source] serde_json::Error),
    /// `VCAP_SERVICES` could not give a Redis.
    #[error(transparent)]
    Vcap(#[from] VcapError),
    /// `REDIS_URL` cannot be used.
    #[error(
        "REDIS_URL must be a redis:// or rediss:// URL such as redis://:password@host:6379/0, but {0}"
    )]
    RedisUrl(#[source] RedisUrlError),
    /// A `SESSION_SECRET` part is too short to be a signing key.
    #[error(
        "SESSION_SECRET part {index} is {len} bytes; each comma-separated secret must be at least {MIN_SECRET_BYTES} bytes (try: openssl rand -base64 48)"
    )]
    ShortSecret {
        /// 1-based position of the part.
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// `SESSION_STORE=redis` but no Redis anywhere.
    #[error(
        "SESSION_STORE=redis but no Redis is configured: set REDIS_URL or bind a Redis service (VCAP_SERVICES)"
    )]
    RedisRequired,
    /// The environment could not be read at all.
    #[error("the environment could not be read: {0}")]
    Environment(String),
    /// On Cloud Foundry with no Redis bound.
    #[error(
        "running on Cloud Foundry (VCAP_APPLICATION is set) but VCAP_SERVICES has no Redis binding: \
         bind one with `cf create-service p.redis cache-small redis-sessions-store && cf bind-service redis-sessions redis-sessions-store`, \
         or set SESSION_STORE=memory to accept per-instance sessions"
    )]
    NoRedisOnCloudFoundry,
}
