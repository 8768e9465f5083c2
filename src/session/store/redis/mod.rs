//! Sessions in Redis: one hash per session, changed only atomically, by server-side scripts
//! or a transaction.
//!
//! Each operation is one `EVALSHA`, one transaction (`MULTI` … `EXEC`) or one plain command,
//! on one key: one round trip, atomic, and single-slot on a Redis Cluster. Which Redis
//! answers (one endpoint, a primary found through Sentinels, or a cluster node) is the
//! business of [`connection`]; this module only decides what may be sent again when
//! something fails.
//!
//! Limits, and which one fires when (all three are `REDIS_TIMEOUT_MS`):
//! - the per-request deadline ([`super::within`], in the session handle and the readiness
//!   check) bounds the pool wait, connects, commands and the resending of refused commands of
//!   a request together. It starts first, so within a request it is the one that fires, and
//!   it answers the user (503). A command it drops unanswered retires its connection.
//! - the redis-rs connect and response timeouts bound one connect and one reply on a
//!   socket. They protect connections for callers without a deadline of their own (a direct
//!   store call); they report [`StoreError::Timeout`] and retire the connection. Such callers
//!   also stop resending a refused command `REDIS_TIMEOUT_MS` after the first refusal.

pub mod connection;
mod template;

use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::{self, Cmd, ErrorKind, FromRedisValue, RedisError, Script, Value};
use secrecy::{ExposeSecret, SecretString};
use tokio::time::{Instant, sleep_until};

use self::connection::{
    CheckError, Connections, GetError, Request, Transaction, demoted, did_not_run,
};
pub use self::connection::{NotWritable, PoolRegistry, PoolTotals, RedisConfigError};
use self::template::{Plan, Refusal, Templates};
use super::{Applied, Presence, Record, Rejection, SessionStore, StoreError, StoreKind, Update};
use crate::config::{RedisEndpoint, RedisTopology};
use crate::session::id::SessionKey;
use crate::telemetry::metrics::{RedisOperation, RedisTimer};

/// Applies a session update: sets, removes and an increment on one key, in one step.
const APPLY_LUA: &str = include_str!("../lua/apply.lua");

/// The counter request's hot path: an increment on an existing session, sliding its lifetime.
const TOUCH_LUA: &str = include_str!("../lua/touch.lua");

/// Returns the session's fields and slides its lifetime, or nil if it does not exist.
const LOAD_LUA: &str = include_str!("../lua/load.lua");

/// SET NX makes the first instance's secret everyone's; every caller gets the stored one back.
const SECRET_LUA: &str = include_str!("../lua/secret.lua");

/// Readiness: answers the name of the first command this service needs that the ACL user
/// may not run, or nil.
const PROBE_LUA: &str = include_str!("../lua/probe.lua");

/// The first pause before sending again a command that Redis refused without running it
/// (a failover or a slot migration in progress); it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// The Redis session store.
///
/// Each HTTP worker thread gets its own connections ([`RedisStore::for_worker`]): redis-rs
/// drives a connection from a task on the thread that created it, so connections shared
/// across workers would route every command through another thread and, worse, lose
/// connections in use by busy workers when an idle worker stops during a graceful shutdown.
pub struct RedisStore {
    conns: Connections,
    timeout: Duration,
    secret_key: String,
    apply: Lua,
    touch: Lua,
    load: Lua,
    secret: Lua,
    probe: Lua,
    templates: Templates,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("conns", &self.conns)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for `endpoint` laid out as `topology`; connects lazily, so Redis may be down
    /// at start-up.
    pub fn new(
        endpoint: &RedisEndpoint,
        topology: &RedisTopology,
        pool_size: usize,
        timeout: Duration,
        key_prefix: &str,
    ) -> Result<Self, RedisConfigError> {
        let conns = Connections::new(endpoint, topology, pool_size, timeout)?;
        Ok(Self::with(conns, timeout, format!("{key_prefix}:secret")))
    }

    /// Every worker pool made from this store, for the metrics.
    pub fn pools(&self) -> PoolRegistry {
        self.conns.pools()
    }

    /// A store with the same settings and connections of its own, for one HTTP worker thread.
    pub fn for_worker(&self) -> Self {
        Self::with(
            self.conns.for_worker(),
            self.timeout,
            self.secret_key.clone(),
        )
    }

    fn with(conns: Connections, timeout: Duration, secret_key: String) -> Self {
        Self {
            conns,
            timeout,
            secret_key,
            apply: Lua::new(APPLY_LUA),
            touch: Lua::new(TOUCH_LUA),
            load: Lua::new(LOAD_LUA),
            secret: Lua::new(SECRET_LUA),
            probe: Lua::new(PROBE_LUA),
            templates: Templates::new(),
        }
    }

    /// Sends one command; no deadline here: the caller's per-request deadline
    /// ([`super::within`]) bounds the whole of it (see the module docs).
    ///
    /// - An error *reply* that proves the command did not run (`READONLY`, `TRYAGAIN`,
    ///   `CLUSTERDOWN`, `MASTERDOWN`, `LOADING`, ...) is sent again after a short back-off,
    ///   even a counter update: a failover or a slot migration is under way. `READONLY` means
    ///   the node was demoted, so every connection to it is retired first and the next one
    ///   finds the primary again (through DNS or the Sentinels).
    /// - A connection failure, a socket timeout or a command dropped unanswered retires the
    ///   connection and its pool-mates. redis-rs reports the same broken pipe whether or not
    ///   the command left, so only commands that may safely run twice are sent again, once.
    ///
    /// Connections are multiplexed, so one goes back to the pool as soon as it is handed out:
    /// concurrent requests pipeline their commands on it instead of queueing for exclusive
    /// use, which is what keeps one round trip cheap under load.
    async fn send<T: FromRedisValue>(
        &self,
        request: Request<'_>,
        retry: Retry,
    ) -> Result<T, StoreError> {
        // Only for callers without a deadline: when to stop resending a refused command. Set
        // at the first refusal, so a command that is not refused reads no clock for it.
        let mut resend_until = None;
        let mut retried = false;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let mut link = self
                .conns
                .get()
                .await
                .map_err(|e| get_error(e, self.timeout))?;
            let in_flight = RetireOnDrop {
                conns: &self.conns,
                generation: link.generation,
            };
            let result = link.send(request).await;
            std::mem::forget(in_flight);
            match result {
                Ok(value) => return Ok(value),
                Err(e) if did_not_run(&e) => {
                    if demoted(&e) {
                        self.conns.retire(link.generation);
                    }
                    // Wait for the failover or migration to finish.
                    let now = Instant::now();
                    let until = *resend_until.get_or_insert(now + self.timeout);
                    let next = now + backoff;
                    if next >= until {
                        return Err(unavailable_unless_named(e));
                    }
                    crate::telemetry::in_request(
                        || tracing::debug!(error.message = %e, "Redis refused a command without running it; sending it again"),
                    );
                    sleep_until(next).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) if e.is_timeout() => {
                    // The command may still be queued on this connection; fresh ones are safer
                    // than inheriting a stalled or half-open socket.
                    self.conns.retire(link.generation);
                    return Err(self.socket_timeout());
                }
                Err(e)
                    if e.is_io_error()
                        || e.is_connection_dropped()
                        || e.is_unrecoverable_error() =>
                {
                    // Its pool-mates most likely died the same way (Redis restarted).
                    self.conns.retire(link.generation);
                    if !retried && retry == Retry::Idempotent && e.is_connection_dropped() {
                        retried = true;
                        continue;
                    }
                    return Err(classify(e));
                }
                Err(e) => return Err(classify(e)),
            }
        }
    }

    /// [`Self::send`] of one command, with the script behind it if it is an `EVALSHA`.
    async fn query<T: FromRedisValue>(
        &self,
        cmd: &Cmd,
        script: Option<&Lua>,
        retry: Retry,
    ) -> Result<T, StoreError> {
        let script = script.map(|l| l.code);
        self.send(Request::Command { cmd, script }, retry).await
    }

    /// A connect or a reply outlasted the socket timeout; only a caller without a deadline
    /// of its own sees this (see the module docs).
    fn socket_timeout(&self) -> StoreError {
        StoreError::Timeout(self.timeout)
    }
}

/// Retires a connection whose command was dropped unanswered (the request's deadline
/// passed): the command may still be queued on it, and fresh connections are safer than a
/// stalled or half-open socket.
struct RetireOnDrop<'a> {
    conns: &'a Connections,
    generation: u64,
}

impl Drop for RetireOnDrop<'_> {
    fn drop(&mut self) {
        self.conns.retire(self.generation);
    }
}

/// A connection could not be had: named like any other Redis error when Redis said why.
fn get_error(e: GetError, timeout: Duration) -> StoreError {
    match e {
        GetError::Redis(e) if e.is_timeout() => StoreError::Timeout(timeout),
        GetError::Redis(e) => unavailable_unless_named(e),
        GetError::Pool(e) | GetError::Config(e) => StoreError::Unavailable(e),
    }
}

/// [`classify`] for errors that say the topology is in flux (no primary known to the
/// Sentinels, a cluster down or moving slots, no connection to a node) rather than that
/// the command is wrong: those without a name of their own are unavailability (503), not a
/// refused command (500).
fn unavailable_unless_named(e: RedisError) -> StoreError {
    match classify(e) {
        StoreError::Command(source) => StoreError::Unavailable(source),
        other => other,
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

    /// `EVALSHA` of this script on one key, with room for `args` more arguments.
    fn call(&self, key: &SessionKey, args: usize) -> Cmd {
        // Sized up front: growing the argument and data buffers one push at a time cost a
        // counter request three reallocations.
        let mut cmd = Cmd::with_capacity(4 + args, 64 + self.sha.len() + key.as_str().len());
        cmd.arg("EVALSHA").arg(&self.sha).arg(1).arg(key.as_str());
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
        let timer = RedisTimer::start(RedisOperation::Load);
        let mut cmd = self.load.call(key, 1);
        cmd.arg(ttl_secs(ttl));
        let reply = self.query(&cmd, Some(&self.load), Retry::Idempotent).await;
        timer.finish(reply.and_then(record_from))
    }

    /// The two common updates get scripts of their own, each cheaper for Redis than the
    /// general one: a counter increment on an existing session (every counter page) and the
    /// creation of a session (every first visit).
    async fn apply(&self, key: &SessionKey, update: &Update<'_>) -> Result<Applied, StoreError> {
        let timer = RedisTimer::start(RedisOperation::Apply);
        let only_incr = update.set.is_empty() && update.remove.is_empty();
        // A counter that is also being set needs apply.lua's check that the value set is an
        // integer, and creation needs at least one field (HSET takes no empty list).
        let plain_create = update.remove.is_empty()
            && match update.incr {
                Some((field, _)) => update.set.iter().all(|(f, _)| *f != field),
                None => !update.set.is_empty(),
            };
        let result = match (update.presence, update.incr) {
            (Presence::MustExist, Some((field, by))) if only_incr => {
                self.touch_counter(key, update.ttl, field, by).await
            }
            (Presence::New, _) if plain_create => self.create(key, update).await,
            _ => self.apply_any(key, update).await,
        };
        timer.finish(result)
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError> {
        let timer = RedisTimer::start(RedisOperation::Delete);
        let removed = self
            .query::<i64>(redis::cmd("DEL").arg(key.as_str()), None, Retry::Idempotent)
            .await;
        timer.finish(removed.map(|n| n > 0))
    }

    /// Not just "answers": a demoted endpoint (`ROLE` says replica), Sentinels that know
    /// no primary and a cluster that is down all fail, so the router stops sending traffic
    /// that could not be served; and so does an ACL user that lacks a command.
    async fn ping(&self) -> Result<(), StoreError> {
        let timer = RedisTimer::start(RedisOperation::Ping);
        timer.finish(self.check().await)
    }

    async fn shared_secret(&self, candidate: SecretString) -> Result<SecretString, StoreError> {
        let timer = RedisTimer::start(RedisOperation::Secret);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.secret.sha)
            .arg(1)
            .arg(&self.secret_key)
            .arg(candidate.expose_secret());
        let stored = self
            .query::<Option<String>>(&cmd, Some(&self.secret), Retry::Idempotent)
            .await;
        timer.finish(stored.map(|s| s.map(SecretString::from).unwrap_or(candidate)))
    }
}

impl RedisStore {
    /// [`touch.lua`](../lua/touch.lua): `Missing` when the session is gone.
    async fn touch_counter(
        &self,
        key: &SessionKey,
        ttl: Duration,
        field: &str,
        by: i64,
    ) -> Result<Applied, StoreError> {
        let mut cmd = self.touch.call(key, 3);
        cmd.arg(ttl_secs(ttl)).arg(field).arg(by);
        let counter = self
            .query::<Option<i64>>(&cmd, Some(&self.touch), Retry::Never)
            .await?;
        Ok(counter.map_or(Applied::Missing, |n| Applied::Done(Some(n))))
    }

    /// A new session: its fields (the counter starting at its step) and its lifetime, in
    /// one step, so it never exists without a TTL. Nothing checks that the key is free: it
    /// holds a fresh 256-bit random id, so a collision is as likely as guessing a session.
    ///
    /// The common one, a counter and nothing else, is one `RESTORE` of the payload Redis
    /// gave for the first ([`template`]); any other, and the first, is `MULTI` `HSET` `EXPIRE`
    /// `EXEC`, which costs Redis about half the CPU of the same two commands in a Lua script
    /// (README, Performance).
    async fn create(&self, key: &SessionKey, update: &Update<'_>) -> Result<Applied, StoreError> {
        let done = Applied::Done(update.incr.map(|(_, by)| by));
        let Some((field, by)) = update.incr.filter(|_| update.set.is_empty()) else {
            self.create_in_transaction(key, update, false).await?;
            return Ok(done);
        };
        let dump = match self.templates.plan(field, by) {
            Plan::Restore(payload) => {
                let mut restore = Cmd::with_capacity(4, 32 + key.as_str().len() + payload.len());
                // In milliseconds, and at least 1,000: a TTL of 0 would mean no expiry.
                restore
                    .arg("RESTORE")
                    .arg(key.as_str())
                    .arg(ttl_secs(update.ttl) * 1000)
                    .arg(&*payload);
                match self.query::<()>(&restore, None, Retry::Never).await {
                    Ok(()) => return Ok(done),
                    Err(e) => {
                        // Nothing ran; a transaction (learning the payload again) will.
                        let refusal = template::refusal(&e).ok_or(e)?;
                        self.templates.refused(&refusal);
                        refusal == Refusal::Payload
                    }
                }
            }
            Plan::Transaction { dump } => dump,
        };
        match self.create_in_transaction(key, update, dump).await {
            Ok(Some(payload)) => self.templates.learn(field, by, payload),
            Ok(None) => {}
            Err(e) => {
                // A DUMP refused while queued made Redis discard the whole transaction.
                let refusal = template::refusal(&e).filter(|_| dump).ok_or(e)?;
                self.templates.refused(&refusal);
                self.create_in_transaction(key, update, false).await?;
            }
        }
        Ok(done)
    }

    /// `MULTI` `HSET` `EXPIRE` (`DUMP`) `EXEC`: with `dump`, answers Redis's serialization of
    /// the new session, if the session is nothing but the fields just set.
    async fn create_in_transaction(
        &self,
        key: &SessionKey,
        update: &Update<'_>,
        dump: bool,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let fields = update.set.len() + usize::from(update.incr.is_some());
        let mut hset = Cmd::with_capacity(2 + 2 * fields, 64 + key.as_str().len());
        hset.arg("HSET").arg(key.as_str());
        for (field, value) in &update.set {
            hset.arg(*field).arg(*value);
        }
        if let Some((field, by)) = update.incr {
            hset.arg(field).arg(by);
        }
        let mut expire = redis::cmd("EXPIRE");
        expire.arg(key.as_str()).arg(ttl_secs(update.ttl));
        if !dump {
            let tx = Transaction::of([hset, expire]);
            self.send::<()>(Request::Transaction(&tx), Retry::Never)
                .await?;
            return Ok(None);
        }
        let mut dump = redis::cmd("DUMP");
        dump.arg(key.as_str());
        let tx = Transaction::of([hset, expire, dump]);
        let (added, _, payload): (usize, i64, Option<Vec<u8>>) =
            self.send(Request::Transaction(&tx), Retry::Never).await?;
        // Fewer fields added than set means the key held fields already: not a template.
        Ok(payload.filter(|_| added == fields))
    }

    /// [`apply.lua`](../lua/apply.lua): any mix of sets, removals and an increment.
    async fn apply_any(
        &self,
        key: &SessionKey,
        update: &Update<'_>,
    ) -> Result<Applied, StoreError> {
        let mut cmd = self
            .apply
            .call(key, 5 + 2 * update.set.len() + update.remove.len());
        cmd.arg(ttl_secs(update.ttl))
            .arg(match update.presence {
                Presence::MustExist => "x",
                Presence::New => "n",
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
        let reply = self
            .query::<Vec<i64>>(&cmd, Some(&self.apply), Retry::Never)
            .await?;
        match reply.as_slice() {
            [1] => Ok(Applied::Done(None)),
            [1, n] => Ok(Applied::Done(Some(*n))),
            [0] => Ok(Applied::Missing),
            other => Err(StoreError::Protocol(format!(
                "apply script answered {other:?}"
            ))),
        }
    }

    /// The readiness check behind [`SessionStore::ping`].
    async fn check(&self) -> Result<(), StoreError> {
        // First whether this service's ACL user may run what it needs (and whether the node
        // answers at all: a replica that serves no stale data says MASTERDOWN here).
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.probe.sha).arg(1).arg(&self.secret_key);
        let refused: Option<String> = self
            .query(&cmd, Some(&self.probe), Retry::Idempotent)
            .await?;
        if let Some(command) = refused {
            return Err(StoreError::Rejected {
                reason: Rejection::Permission,
                source: format!("the ACL user may not run {command} on {}", self.secret_key).into(),
            });
        }
        match self.conns.check_writable().await {
            Ok(()) => Ok(()),
            Err(CheckError::Get(e)) => Err(get_error(e, self.timeout)),
            Err(CheckError::NotWritable(e @ NotWritable::Replica)) => Err(StoreError::Rejected {
                reason: Rejection::ReadOnly,
                source: Box::new(e),
            }),
            Err(CheckError::NotWritable(e)) => Err(StoreError::Unavailable(Box::new(e))),
            Err(CheckError::Redis(e, _)) if e.is_timeout() => Err(self.socket_timeout()),
            Err(CheckError::Redis(e, generation)) => {
                if e.is_io_error() || e.is_connection_dropped() {
                    self.conns.retire(generation);
                }
                Err(classify(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::store::StoreErrorKind;
    use deadpool_redis::redis::ServerErrorKind;

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
                RedisError::from((ErrorKind::Server(ServerErrorKind::BusyLoading), "Loading")),
                StoreErrorKind::Loading,
            ),
            (
                RedisError::from((ErrorKind::Server(ServerErrorKind::ReadOnly), "read only")),
                StoreErrorKind::ReadOnly,
            ),
            (
                RedisError::from((
                    ErrorKind::Server(ServerErrorKind::MasterDown),
                    "master down",
                )),
                StoreErrorKind::MasterDown,
            ),
            (
                RedisError::from((
                    ErrorKind::Server(ServerErrorKind::ResponseError),
                    "script failed",
                    "The user executing the script can't run this command or subcommand script: ab"
                        .into(),
                )),
                StoreErrorKind::Permission,
            ),
            (
                RedisError::from((
                    ErrorKind::Server(ServerErrorKind::ResponseError),
                    "script failed",
                    "Error running script (call to f_ab): @user_script:1: -OOM command not allowed"
                        .into(),
                )),
                StoreErrorKind::OutOfMemory,
            ),
            (
                RedisError::from((
                    ErrorKind::Server(ServerErrorKind::ResponseError),
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
    fn a_topology_in_flux_is_unavailability_not_a_refused_command() {
        let cases = [
            RedisError::from((ErrorKind::MasterNameNotFoundBySentinel, "no master")),
            RedisError::from((ErrorKind::ClusterConnectionNotFound, "no node")),
            reply("CLUSTERDOWN", "The cluster is down"),
            reply("TRYAGAIN", "Multiple keys request during rehashing of slot"),
        ];
        for error in cases {
            let text = error.to_string();
            assert_eq!(
                unavailable_unless_named(error).kind(),
                StoreErrorKind::Connection,
                "{text}"
            );
        }
        assert_eq!(
            unavailable_unless_named(reply("READONLY", "replica")).kind(),
            StoreErrorKind::ReadOnly
        );
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

    /// Every request's store future is boxed (the trait is object-safe) and so moved whole
    /// once: the rare connect paths are boxed separately so they do not inflate it. It was
    /// 10.6 KB with them inline, and copying it was 12% of a request's instructions under
    /// callgrind (which counts each byte of a `rep movsb`, so less in time).
    #[test]
    fn a_counter_updates_future_stays_small() {
        let endpoint = RedisEndpoint {
            host: "127.0.0.1".into(),
            port: 6379,
            tls: false,
            username: None,
            tentative_username: None,
            password: None,
            db: 0,
        };
        let timeout = Duration::from_millis(100);
        let store =
            RedisStore::new(&endpoint, &RedisTopology::Auto, 1, timeout, "sess").expect("store");
        let key = crate::session::id::SessionId::generate().key("sess");
        let counter_update = |presence| Update {
            presence,
            set: vec![],
            remove: vec![],
            incr: Some(("visits", 1)),
            ttl: timeout,
        };
        let (update, new) = (
            counter_update(Presence::MustExist),
            counter_update(Presence::New),
        );
        let touch = store.touch_counter(&key, timeout, "visits", 1);
        let any = store.apply_any(&key, &update);
        let create = store.create(&key, &new);
        for (name, size) in [
            ("touch_counter", std::mem::size_of_val(&touch)),
            ("apply_any", std::mem::size_of_val(&any)),
            ("create", std::mem::size_of_val(&create)),
        ] {
            assert!(size <= 2048, "{name}'s future is {size} bytes");
        }
    }
}
