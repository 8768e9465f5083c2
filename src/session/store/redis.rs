//! Sessions in Redis: one hash per session, changed only by server-side scripts.
//!
//! Each operation is one `EVALSHA` (or one plain command) on one key: one round trip, atomic,
//! and single-slot on a Redis Cluster. Connections come from a deadpool pool whose recycle
//! step costs nothing: deadpool-redis's own manager sends `UNWATCH` + `PING` on every
//! checkout, an extra round trip per request (the README's Performance section has what
//! that costs). Here a connection is dropped instead when a command on it fails or times out.
//!
//! Limits, and which one fires when (all three are `REDIS_TIMEOUT_MS`):
//! - the per-request deadline ([`super::within`], in the session handle and the readiness
//!   check) bounds the pool wait, connects and commands of a request together. It starts
//!   first, so within a request it is the one that fires, and it answers the user (503).
//!   A command it drops unanswered retires its connection.
//! - the redis-rs connect and response timeouts bound one connect and one reply on a
//!   socket. They protect connections for callers without a deadline of their own (a direct
//!   store call); they report [`StoreError::Timeout`] and retire the connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool::managed::{self, Metrics, RecycleResult};
use deadpool_redis::redis::{
    self, AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind,
    FromRedisValue, ProtocolVersion, RedisConnectionInfo, RedisError, Script, Value,
    aio::MultiplexedConnection,
};
use secrecy::{ExposeSecret, SecretString};

use super::{
    Applied, Presence, Record, Rejection, SessionStore, StoreError, StoreErrorKind, StoreKind,
    Update,
};
use crate::config::RedisEndpoint;
use crate::session::id::SessionKey;

/// Connections idle longer than this are pinged before reuse; busy ones never are. Short, so
/// that a connection that died while idle (say, Redis restarted) is found out before a
/// non-idempotent command is sent on it rather than after.
const IDLE_CHECK_AFTER: Duration = Duration::from_secs(1);

/// Applies a session update: sets, removes and an increment on one key, in one step.
const APPLY_LUA: &str = include_str!("lua/apply.lua");

/// Returns the session's fields and slides its lifetime, or nil if it does not exist.
const LOAD_LUA: &str = include_str!("lua/load.lua");

/// SET NX makes the first instance's secret everyone's; every caller gets the stored one back.
const SECRET_LUA: &str = include_str!("lua/secret.lua");

/// Readiness: answers the name of the first command this service needs that the ACL user
/// may not run, or nil.
const PROBE_LUA: &str = include_str!("lua/probe.lua");

/// A pooled multiplexed connection and the pool generation it was made in.
struct PooledConnection {
    conn: MultiplexedConnection,
    generation: u64,
}

/// How to open a connection: one client per way of authenticating.
#[derive(Clone)]
struct Clients {
    /// As configured: the password alone when the user name is tentative.
    primary: Client,
    /// With the tentative user name, for when Redis refuses the password alone.
    fallback: Option<(Client, String)>,
    /// The fallback worked once, so this process goes straight to it; shared by all workers.
    use_fallback: Arc<AtomicBool>,
}

impl Clients {
    fn new(endpoint: &RedisEndpoint) -> Result<Self, RedisError> {
        let client = |username: Option<String>| {
            let addr = if endpoint.tls {
                ConnectionAddr::TcpTls {
                    host: endpoint.host.clone(),
                    port: endpoint.port,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(endpoint.host.clone(), endpoint.port)
            };
            Client::open(ConnectionInfo {
                addr,
                redis: RedisConnectionInfo {
                    db: endpoint.db,
                    username,
                    password: endpoint
                        .password
                        .as_ref()
                        .map(|p| p.expose_secret().to_owned()),
                    protocol: ProtocolVersion::RESP2,
                },
            })
        };
        let fallback = match &endpoint.tentative_username {
            Some(name) if endpoint.username.is_none() => {
                Some((client(Some(name.clone()))?, name.clone()))
            }
            _ => None,
        };
        Ok(Self {
            primary: client(endpoint.username.clone())?,
            fallback,
            use_fallback: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Connects and authenticates; a refused password alone is retried once with the
    /// tentative user name, and if that works, every later connection uses it.
    async fn connect(
        &self,
        config: &AsyncConnectionConfig,
    ) -> Result<MultiplexedConnection, RedisError> {
        let Some((fallback, username)) = &self.fallback else {
            return self
                .primary
                .get_multiplexed_async_connection_with_config(config)
                .await;
        };
        if self.use_fallback.load(Ordering::Relaxed) {
            return fallback
                .get_multiplexed_async_connection_with_config(config)
                .await;
        }
        match self
            .primary
            .get_multiplexed_async_connection_with_config(config)
            .await
        {
            Err(e) if e.kind() == ErrorKind::AuthenticationFailed => {
                // Both refused: the password is wrong, and the first answer says so best.
                let conn = fallback
                    .get_multiplexed_async_connection_with_config(config)
                    .await
                    .map_err(|_| e)?;
                if !self.use_fallback.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        redis.user = %username,
                        "Redis refused the binding's password alone; authenticated as the user \
                         named in its uri instead. Give the user in a `username` field to skip \
                         the refused attempt"
                    );
                }
                Ok(conn)
            }
            result => result,
        }
    }
}

/// Creates connections with a deadline and recycles them without a round trip.
struct RedisManager {
    clients: Clients,
    config: AsyncConnectionConfig,
    /// The store's generation counter, shared so new connections carry the current value.
    generation: Arc<AtomicU64>,
}

impl managed::Manager for RedisManager {
    type Type = PooledConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<PooledConnection, RedisError> {
        let conn = self.clients.connect(&self.config).await?;
        Ok(PooledConnection {
            conn,
            generation: self.generation.load(Ordering::Relaxed),
        })
    }

    async fn recycle(
        &self,
        c: &mut PooledConnection,
        metrics: &Metrics,
    ) -> RecycleResult<RedisError> {
        if c.generation < self.generation.load(Ordering::Relaxed) {
            return Err(managed::RecycleError::message("connection failed earlier"));
        }
        // A connection that sat idle may have been cut by a firewall or a Redis restart;
        // one that was just used is known good, and checking it again would double the
        // round trips of every request.
        if metrics.last_used() > IDLE_CHECK_AFTER {
            redis::cmd("PING").query_async::<()>(&mut c.conn).await?;
        }
        Ok(())
    }
}

type Pool = managed::Pool<RedisManager>;

/// The Redis session store.
///
/// Each HTTP worker thread gets its own pool ([`RedisStore::for_worker`]): redis-rs drives a
/// connection from a task on the thread that created it, so a pool shared across workers
/// would route every command through another thread and, worse, lose connections in use
/// by busy workers when an idle worker stops during a graceful shutdown.
pub struct RedisStore {
    pool: Pool,
    clients: Clients,
    config: AsyncConnectionConfig,
    pool_size: usize,
    /// Bumped when a connection is found dead, so its pool-mates are replaced too.
    generation: Arc<AtomicU64>,
    timeout: Duration,
    secret_key: String,
    apply: Lua,
    load: Lua,
    secret: Lua,
    probe: Lua,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("pool", &self.pool.status())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Building the store failed; only a malformed endpoint can cause this.
#[derive(Debug, thiserror::Error)]
#[error("cannot configure the Redis connection pool")]
pub struct RedisConfigError(#[source] Box<dyn std::error::Error + Send + Sync>);

impl RedisStore {
    /// A store for `endpoint`; connects lazily, so Redis may be down at start-up.
    pub fn new(
        endpoint: &RedisEndpoint,
        pool_size: usize,
        timeout: Duration,
        key_prefix: &str,
    ) -> Result<Self, RedisConfigError> {
        let clients = Clients::new(endpoint).map_err(|e| RedisConfigError(Box::new(e)))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout);
        Ok(Self::with_pool(
            clients,
            config,
            pool_size,
            timeout,
            format!("{key_prefix}:secret"),
        ))
    }

    /// A store with the same settings and a pool of its own, for one HTTP worker thread.
    pub fn for_worker(&self) -> Self {
        Self::with_pool(
            self.clients.clone(),
            self.config.clone(),
            self.pool_size,
            self.timeout,
            self.secret_key.clone(),
        )
    }

    fn with_pool(
        clients: Clients,
        config: AsyncConnectionConfig,
        pool_size: usize,
        timeout: Duration,
        secret_key: String,
    ) -> Self {
        let generation = Arc::new(AtomicU64::new(0));
        let manager = RedisManager {
            clients: clients.clone(),
            config: config.clone(),
            generation: generation.clone(),
        };
        // No pool-level timeouts: the caller's deadline bounds the pool wait, the connect and
        // the command together. Without them the builder has nothing that can fail.
        let pool = match Pool::builder(manager).max_size(pool_size).build() {
            Ok(pool) => pool,
            Err(e) => unreachable!("a pool without timeouts always builds: {e}"),
        };
        Self {
            pool,
            clients,
            config,
            pool_size,
            generation,
            timeout,
            secret_key,
            apply: Lua::new(APPLY_LUA),
            load: Lua::new(LOAD_LUA),
            secret: Lua::new(SECRET_LUA),
            probe: Lua::new(PROBE_LUA),
        }
    }

    /// Sends one command, retiring the connection (and its pool-mates) if the command fails
    /// at the connection level, times out on the socket or is dropped unanswered.
    ///
    /// No deadline here: the caller's per-request deadline ([`super::within`]) bounds the
    /// pool wait, the connect and the command together (see the module docs).
    ///
    /// The pooled connection is multiplexed, so it goes back to the pool as soon as it is
    /// handed out: concurrent requests pipeline their commands on it instead of queueing for
    /// exclusive use, which is what keeps one round trip cheap under load.
    ///
    /// `script` is the Lua source behind an `EVALSHA`, loaded and retried once on `NOSCRIPT`
    /// (after a Redis restart or failover the script cache is empty).
    async fn query<T: FromRedisValue>(
        &self,
        cmd: &Cmd,
        script: Option<&Lua>,
        retry: Retry,
    ) -> Result<T, StoreError> {
        let mut retried = false;
        loop {
            let (mut conn, generation) = match self.pool.get().await {
                Err(managed::PoolError::Backend(e)) if e.is_timeout() => {
                    return Err(self.socket_timeout());
                }
                Err(managed::PoolError::Backend(e)) => return Err(classify(e)),
                Err(e) => return Err(StoreError::Unavailable(Box::new(e))),
                Ok(pooled) => (pooled.conn.clone(), pooled.generation),
            };
            let in_flight = RetireOnDrop {
                store: self,
                generation,
            };
            let result = send(&mut conn, cmd, script).await;
            std::mem::forget(in_flight);
            match result {
                Ok(value) => return Ok(value),
                Err(e) if e.is_timeout() => {
                    // The command may still be queued on this connection; fresh ones are safer
                    // than inheriting a stalled or half-open socket.
                    self.retire(generation);
                    return Err(self.socket_timeout());
                }
                Err(e)
                    if e.is_io_error()
                        || e.is_connection_dropped()
                        || e.is_unrecoverable_error() =>
                {
                    // Its pool-mates most likely died the same way (Redis restarted).
                    self.retire(generation);
                    // redis-rs reports the same broken pipe whether or not the command left,
                    // so only commands that may safely run twice are retried.
                    if !retried && retry == Retry::Idempotent && e.is_connection_dropped() {
                        retried = true;
                        continue;
                    }
                    return Err(classify(e));
                }
                Err(e) => {
                    let error = classify(e);
                    if matches!(
                        error.kind(),
                        StoreErrorKind::ReadOnly | StoreErrorKind::MasterDown
                    ) {
                        // A failover demoted this server; fresh connections find the new
                        // primary once the address points at it.
                        self.retire(generation);
                    }
                    return Err(error);
                }
            }
        }
    }

    /// A connect or a reply outlasted the socket timeout; only a caller without a deadline
    /// of its own sees this (see the module docs).
    fn socket_timeout(&self) -> StoreError {
        StoreError::Timeout(self.timeout)
    }

    /// Makes the pool replace every connection created up to `generation`.
    fn retire(&self, generation: u64) {
        self.generation.fetch_max(generation + 1, Ordering::Relaxed);
    }
}

/// Names what a Redis error means for this service: a refusal an operator can act on, a
/// connection failure, or an error reply with no name here.
fn classify(e: RedisError) -> StoreError {
    let reason = if e.kind() == ErrorKind::AuthenticationFailed {
        Some(Rejection::Auth)
    } else {
        e.code()
            .and_then(rejection_for_code)
            .or_else(|| e.detail().and_then(code_inside_script_error))
    };
    match reason {
        Some(reason) => StoreError::Rejected {
            reason,
            source: Box::new(e),
        },
        None if e.is_connection_refusal() => StoreError::ConnectionRefused(Box::new(e)),
        None if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() => {
            StoreError::Unavailable(Box::new(e))
        }
        None => StoreError::Command(Box::new(e)),
    }
}

/// The refusal an error code stands for, if it is one this service names.
fn rejection_for_code(code: &str) -> Option<Rejection> {
    Some(match code {
        "OOM" => Rejection::OutOfMemory,
        "NOAUTH" | "WRONGPASS" => Rejection::Auth,
        "NOPERM" => Rejection::Permission,
        "READONLY" => Rejection::ReadOnly,
        "MASTERDOWN" => Rejection::MasterDown,
        "LOADING" => Rejection::Loading,
        "BUSY" => Rejection::Busy,
        "MISCONF" => Rejection::Persistence,
        _ => return None,
    })
}

/// The refusal behind an `ERR` from inside a script. Redis before 7.0 wraps the inner error
/// as `Error running script (...): @user_script:1: -OOM command not allowed ...`; 7.0 passes
/// most codes through but words an ACL refusal as `The user executing the script can't ...`.
fn code_inside_script_error(detail: &str) -> Option<Rejection> {
    if detail.starts_with("The user executing the script can't") {
        return Some(Rejection::Permission);
    }
    let (_, inner) = detail.split_once(": -")?;
    rejection_for_code(inner.split_whitespace().next()?)
}

/// Retires a connection whose command was dropped unanswered (the request's deadline
/// passed): the command may still be queued on it, and fresh connections are safer than a
/// stalled or half-open socket.
struct RetireOnDrop<'a> {
    store: &'a RedisStore,
    generation: u64,
}

impl Drop for RetireOnDrop<'_> {
    fn drop(&mut self) {
        self.store.retire(self.generation);
    }
}

/// Sends a command, loading its script first if Redis has forgotten it.
async fn send<T: FromRedisValue>(
    conn: &mut MultiplexedConnection,
    cmd: &Cmd,
    script: Option<&Lua>,
) -> Result<T, RedisError> {
    match (cmd.query_async::<T>(conn).await, script) {
        (Err(e), Some(lua)) if e.kind() == ErrorKind::NoScriptError => {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(lua.code)
                .query_async::<()>(conn)
                .await?;
            cmd.query_async::<T>(conn).await
        }
        (result, _) => result,
    }
}

/// Whether a command may be sent again after its connection failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// Running it twice does no harm (reads, `PING`, `DEL`, `SET NX`).
    Idempotent,
    /// Running it twice would count twice or lose data (`apply`, `take`).
    Never,
}

/// A Lua script and its SHA-1, sent by hash so the body crosses the wire once per server.
struct Lua {
    code: &'static str,
    sha: String,
}

impl Lua {
    fn new(code: &'static str) -> Self {
        Self {
            code,
            sha: Script::new(code).get_hash().to_owned(),
        }
    }

    /// `EVALSHA` of this script on one key.
    fn call(&self, key: &SessionKey) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(1).arg(key.as_str());
        cmd
    }
}

fn ttl_secs(ttl: Duration) -> u64 {
    ttl.as_secs().max(1)
}

fn record_from(value: Value) -> Result<Option<Record>, StoreError> {
    match value {
        Value::Nil => Ok(None),
        Value::Array(items) => {
            let mut record = Record::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                let (Value::BulkString(k), Value::BulkString(v)) = (k, v) else {
                    return Err(StoreError::Protocol("a hash field is not a string".into()));
                };
                let k = String::from_utf8(k)
                    .map_err(|_| StoreError::Protocol("a field name is not UTF-8".into()))?;
                let v = String::from_utf8(v)
                    .map_err(|_| StoreError::Protocol("a field value is not UTF-8".into()))?;
                record.insert(k, v);
            }
            Ok(Some(record))
        }
        other => Err(StoreError::Protocol(format!(
            "expected an array, got {other:?}"
        ))),
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Redis
    }

    async fn load(&self, key: &SessionKey, ttl: Duration) -> Result<Option<Record>, StoreError> {
        let mut cmd = self.load.call(key);
        cmd.arg(ttl_secs(ttl));
        record_from(
            self.query(&cmd, Some(&self.load), Retry::Idempotent)
                .await?,
        )
    }

    async fn apply(&self, key: &SessionKey, update: &Update<'_>) -> Result<Applied, StoreError> {
        let mut cmd = self.apply.call(key);
        cmd.arg(ttl_secs(update.ttl))
            .arg(match update.presence {
                Presence::MustExist => "x",
                Presence::MustBeNew => "n",
            })
            .arg(update.incr.map_or("", |(field, _)| field))
            .arg(update.incr.map_or(0, |(_, by)| by))
            .arg(update.set.len());
        for (field, value) in &update.set {
            cmd.arg(*field).arg(*value);
        }
        for field in &update.remove {
            cmd.arg(*field);
        }
        let reply: Vec<i64> = self.query(&cmd, Some(&self.apply), Retry::Never).await?;
        match reply.as_slice() {
            [1] => Ok(Applied::Done(None)),
            [1, n] => Ok(Applied::Done(Some(*n))),
            [0] => Ok(Applied::Missing),
            [-1] => Ok(Applied::Exists),
            other => Err(StoreError::Protocol(format!(
                "apply script answered {other:?}"
            ))),
        }
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError> {
        let removed: i64 = self
            .query(redis::cmd("DEL").arg(key.as_str()), None, Retry::Idempotent)
            .await?;
        Ok(removed > 0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.probe.sha).arg(1).arg(&self.secret_key);
        let refused: Option<String> = self
            .query(&cmd, Some(&self.probe), Retry::Idempotent)
            .await?;
        match refused {
            None => Ok(()),
            Some(command) => Err(StoreError::Rejected {
                reason: Rejection::Permission,
                source: format!("the ACL user may not run {command} on {}", self.secret_key).into(),
            }),
        }
    }

    async fn shared_secret(&self, candidate: SecretString) -> Result<SecretString, StoreError> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.secret.sha)
            .arg(1)
            .arg(&self.secret_key)
            .arg(candidate.expose_secret());
        let stored: Option<String> = self
            .query(&cmd, Some(&self.secret), Retry::Idempotent)
            .await?;
        Ok(stored.map(SecretString::from).unwrap_or(candidate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: &str, detail: &str) -> RedisError {
        redis::make_extension_error(code.to_owned(), Some(detail.to_owned()))
    }

    #[test]
    fn every_named_error_reply_gets_its_kind() {
        let cases = [
            (
                reply("OOM", "command not allowed when used memory > 'maxmemory'."),
                StoreErrorKind::OutOfMemory,
            ),
            (
                reply("NOAUTH", "Authentication required."),
                StoreErrorKind::Auth,
            ),
            (
                reply("WRONGPASS", "invalid username-password pair"),
                StoreErrorKind::Auth,
            ),
            (
                RedisError::from((
                    ErrorKind::AuthenticationFailed,
                    "Password authentication failed",
                )),
                StoreErrorKind::Auth,
            ),
            (
                reply("NOPERM", "this user has no permissions"),
                StoreErrorKind::Permission,
            ),
            (
                reply("MISCONF", "Redis is configured to save RDB snapshots"),
                StoreErrorKind::Persistence,
            ),
            (
                reply("BUSY", "Redis is busy running a script."),
                StoreErrorKind::Busy,
            ),
            (
                RedisError::from((ErrorKind::BusyLoadingError, "Loading")),
                StoreErrorKind::Loading,
            ),
            (
                RedisError::from((ErrorKind::ReadOnly, "read only")),
                StoreErrorKind::ReadOnly,
            ),
            (
                RedisError::from((ErrorKind::MasterDown, "master down")),
                StoreErrorKind::MasterDown,
            ),
            (
                RedisError::from((
                    ErrorKind::ResponseError,
                    "script failed",
                    "The user executing the script can't run this command or subcommand script: ab"
                        .into(),
                )),
                StoreErrorKind::Permission,
            ),
            (
                RedisError::from((
                    ErrorKind::ResponseError,
                    "script failed",
                    "Error running script (call to f_ab): @user_script:1: -OOM command not allowed"
                        .into(),
                )),
                StoreErrorKind::OutOfMemory,
            ),
            (
                RedisError::from((
                    ErrorKind::ResponseError,
                    "script failed",
                    "WRONGTYPE Operation against a key holding the wrong kind of value".into(),
                )),
                StoreErrorKind::Command,
            ),
            (
                RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
                StoreErrorKind::Refused,
            ),
            (
                RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
                StoreErrorKind::Connection,
            ),
        ];
        for (error, kind) in cases {
            let text = error.to_string();
            assert_eq!(classify(error).kind(), kind, "{text}");
        }
    }

    #[test]
    fn every_kind_has_a_distinct_label() {
        let mut labels: Vec<&str> = StoreErrorKind::ALL.iter().map(|k| k.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), StoreErrorKind::ALL.len());
        for (i, kind) in StoreErrorKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i, "{kind:?} indexes its own slot");
        }
    }
}
