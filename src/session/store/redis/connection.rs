//! How the store reaches Redis, whatever its topology: one endpoint, a primary found through
//! Sentinels, or a Redis Cluster. The store above sends one command on one key and never
//! learns which of the three answered.
//!
//! - **Standalone and Sentinel** share a deadpool pool of multiplexed connections whose
//!   recycle step costs nothing (deadpool-redis's own managers, the Sentinel one included,
//!   send `PING` on every checkout: an extra round trip per request). A connection that failed
//!   retires every pool-mate through a generation counter. With Sentinels, every new
//!   connection asks them for the primary, so retiring the pool is how the store rediscovers
//!   it. redis-rs does not follow Sentinel's `+switch-master` announcements; this layer does
//!   not subscribe to them either, and relies on what a demoted or dead primary does to the
//!   next command instead: `READONLY` from a demoted one, a connection error from a dead one.
//!   Both retire the pool, and the next connection asks the Sentinels again.
//! - **Cluster** uses redis-rs's async cluster client, one per worker thread like the pools
//!   (it multiplexes too). Its own retries are off: they would send a counter update again
//!   after a dropped connection, when it may already have run. `MOVED` and `ASK`, which prove
//!   the command did not run, are followed here instead.
//! - **Auto** asks the one endpoint `INFO cluster` on first use, once per process, and
//!   becomes Standalone or Cluster.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, RecycleResult};
use deadpool_redis::redis::cluster::{ClusterClient, ClusterClientBuilder};
use deadpool_redis::redis::cluster_async::ClusterConnection;
use deadpool_redis::redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use deadpool_redis::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use deadpool_redis::redis::{
    self, AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind,
    FromRedisValue, IntoConnectionInfo, Pipeline, ProtocolVersion, RedisConnectionInfo, RedisError,
    ServerErrorKind, TlsMode, Value,
    aio::{ConnectionLike, MultiplexedConnection},
};
use secrecy::ExposeSecret;
use tokio::sync::OnceCell;

use crate::config::{RedisEndpoint, RedisTopology};
use crate::telemetry::metrics;

/// Connections idle longer than this are pinged before reuse; busy ones never are. Short, so
/// that a connection that died while idle (say, Redis restarted) is found out before a
/// non-idempotent command is sent on it rather than after.
const IDLE_CHECK_AFTER: Duration = Duration::from_secs(1);

/// Redirects followed for one command; more means the cluster is still moving slots.
const MAX_REDIRECTS: usize = 5;

/// How to open a connection to one endpoint: one client per way of authenticating.
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
        let client = |username: Option<&str>| {
            Client::open(connection_info(
                endpoint,
                &endpoint.host,
                endpoint.port,
                username,
            ))
        };
        let fallback = match &endpoint.tentative_username {
            Some(name) if endpoint.username.is_none() => Some((client(Some(name))?, name.clone())),
            _ => None,
        };
        Ok(Self {
            primary: client(endpoint.username.as_deref())?,
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
                    crate::telemetry::in_request(|| {
                        tracing::warn!(
                            redis.user = %username,
                            "Redis refused the binding's password alone; authenticated as the user \
                             named in its uri instead. Give the user in a `username` field to skip \
                             the refused attempt"
                        )
                    });
                }
                Ok(conn)
            }
            result => result,
        }
    }
}

/// Where the pool's new connections go.
enum Target {
    /// One fixed endpoint (DNS may move it, as a managed failover does).
    Fixed(Clients),
    /// Whatever primary the Sentinels name at the time.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// A pooled multiplexed connection and the pool generation it was made in.
struct PooledConnection {
    conn: MultiplexedConnection,
    generation: u64,
}

/// Creates connections with a deadline and recycles them without a round trip.
struct RedisManager {
    target: Target,
    config: AsyncConnectionConfig,
    /// The generation counter, shared so new connections carry the current value.
    generation: Arc<AtomicU64>,
}

impl managed::Manager for RedisManager {
    type Type = PooledConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<PooledConnection, RedisError> {
        // Boxed: deadpool's checkout future embeds this one, and every request's store future
        // embeds that; inline, the rare connect made each request move ~10 KB of state.
        let conn = Box::pin(async {
            match &self.target {
                Target::Fixed(clients) => clients.connect(&self.config).await,
                Target::Sentinel(sentinel) => {
                    // redis-rs checks with ROLE that the node it names is a primary.
                    let client = sentinel.lock().await.async_get_client().await?;
                    client
                        .get_multiplexed_async_connection_with_config(&self.config)
                        .await
                }
            }
        })
        .await?;
        metrics::redis_connection_opened();
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
            // Boxed for the same reason as `create`'s connect.
            Box::pin(redis::cmd("PING").query_async::<()>(&mut c.conn)).await?;
        }
        Ok(())
    }
}

type Pool = managed::Pool<RedisManager>;

/// Building the connection layer failed; only malformed settings can cause this.
#[derive(Debug, thiserror::Error)]
#[error("cannot configure the Redis connection")]
pub struct RedisConfigError(#[source] Box<dyn std::error::Error + Send + Sync>);

/// Why the Redis cannot take writes right now, for readiness.
#[derive(Debug, thiserror::Error)]
pub enum NotWritable {
    /// The endpoint answers `ROLE` with `slave`: it was demoted.
    #[error("the Redis endpoint is a replica (demoted by a failover?)")]
    Replica,
    /// `CLUSTER INFO` does not say `cluster_state:ok`.
    #[error("the Redis Cluster reports cluster_state other than ok")]
    ClusterDown,
}

/// What the layer was built from; cloned into each worker's copy.
#[derive(Clone)]
struct Plan {
    endpoint: RedisEndpoint,
    /// How to authenticate to the one endpoint; shared so a user-name fallback is learnt
    /// (and logged) once per process.
    clients: Clients,
    topology: RedisTopology,
    timeout: Duration,
    pool_size: usize,
    /// What `auto` found, shared by every worker so the endpoint is asked once per process.
    detected: Arc<OnceCell<bool>>,
    /// Every worker's pool, for the metrics.
    pools: PoolRegistry,
}

/// Every worker's pool, for the metrics scrape. Weak, so a stopped worker's pool still
/// closes its connections.
#[derive(Clone, Default)]
pub struct PoolRegistry(Arc<Mutex<Vec<managed::WeakPool<RedisManager>>>>);

/// Connection counts summed over every live pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolTotals {
    /// Open connections.
    pub open: usize,
    /// Connections checked out.
    pub in_use: usize,
    /// Upper bound of connections.
    pub max: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

impl PoolRegistry {
    fn add(&self, pool: &Pool) {
        let mut pools = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        pools.retain(|p| p.upgrade().is_some());
        pools.push(pool.weak());
    }

    /// Sums the status of every pool still in use.
    pub fn totals(&self) -> PoolTotals {
        let pools = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        pools
            .iter()
            .filter_map(managed::WeakPool::upgrade)
            .map(|p| p.status())
            .fold(PoolTotals::default(), |t, s| PoolTotals {
                open: t.open + s.size,
                in_use: t.in_use + (s.size - s.available),
                max: t.max + s.max_size,
                waiting: t.waiting + s.waiting,
            })
    }
}

/// Connections to the Redis, for one worker thread.
pub struct Connections {
    plan: Plan,
    /// Standalone or Sentinel; built lazily so `auto` can become a cluster instead.
    pool: OnceCell<Pool>,
    /// The cluster client and its one connection.
    cluster: OnceCell<ClusterClient>,
    cluster_conn: Mutex<Option<ClusterConnection>>,
    cluster_connecting: tokio::sync::Mutex<()>,
    /// Bumped when a connection is found dead or demoted, so its pool-mates are replaced too.
    generation: Arc<AtomicU64>,
    /// The pooled connection last handed out, handed out again without the pool.
    recent: Mutex<Option<Recent>>,
}

/// A pooled connection, kept aside while it is current and in use. A worker's pool holds one
/// multiplexed connection that every checkout hands out and takes back at once, so the
/// pool's semaphore, queue, recycle step and bookkeeping bought nothing on a busy worker but
/// a tenth of a new session's CPU in the store (README, Performance). A connection that is
/// retired or has been idle goes back through the pool, which replaces or pings it.
struct Recent {
    conn: MultiplexedConnection,
    generation: u64,
    used: Instant,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("topology", &self.plan.topology.name())
            .field("pool", &self.pool.get().map(Pool::status))
            .finish_non_exhaustive()
    }
}

/// A connection to send one command on, and the generation to retire if it fails.
pub struct Link {
    conn: LinkConn,
    /// The generation the connection was made in.
    pub generation: u64,
}

enum LinkConn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Connections {
    /// Connections for `topology`; nothing connects until the first command, so Redis may be
    /// down at start-up.
    pub fn new(
        endpoint: &RedisEndpoint,
        topology: &RedisTopology,
        pool_size: usize,
        timeout: Duration,
    ) -> Result<Self, RedisConfigError> {
        let detected = Arc::new(OnceCell::new());
        match topology {
            RedisTopology::Standalone | RedisTopology::Sentinel(_) => {
                let _ = detected.set(false);
            }
            RedisTopology::Cluster { .. } => {
                let _ = detected.set(true);
            }
            RedisTopology::Auto => {}
        }
        let plan = Plan {
            clients: Clients::new(endpoint).map_err(config_error)?,
            endpoint: endpoint.clone(),
            topology: topology.clone(),
            timeout,
            pool_size,
            detected,
            pools: PoolRegistry::default(),
        };
        // Malformed settings show up now rather than on the first request.
        let this = Self::from_plan(plan);
        this.build_pool()?;
        if let RedisTopology::Cluster { .. } = topology {
            this.build_cluster_client()?;
        }
        Ok(this)
    }

    /// The same settings with connections of their own, for one HTTP worker thread.
    pub fn for_worker(&self) -> Self {
        Self::from_plan(self.plan.clone())
    }

    fn from_plan(plan: Plan) -> Self {
        Self {
            plan,
            pool: OnceCell::new(),
            cluster: OnceCell::new(),
            cluster_conn: Mutex::new(None),
            cluster_connecting: tokio::sync::Mutex::new(()),
            generation: Arc::new(AtomicU64::new(0)),
            recent: Mutex::new(None),
        }
    }

    fn config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.plan.timeout))
            .set_response_timeout(Some(self.plan.timeout))
    }

    fn build_pool(&self) -> Result<Pool, RedisConfigError> {
        let e = &self.plan.endpoint;
        let target = match &self.plan.topology {
            RedisTopology::Sentinel(s) => {
                let tls = |on: bool| {
                    if on {
                        TlsMode::Secure
                    } else {
                        TlsMode::Insecure
                    }
                };
                let addrs = s.sentinels.iter().map(|n| {
                    if s.tls {
                        ConnectionAddr::TcpTls {
                            host: n.host.clone(),
                            port: n.port,
                            insecure: false,
                            tls_params: None,
                        }
                    } else {
                        ConnectionAddr::Tcp(n.host.clone(), n.port)
                    }
                });
                let mut b =
                    SentinelClientBuilder::new(addrs, &s.master, SentinelServerType::Master)
                        .map_err(config_error)?
                        .set_client_to_redis_db(e.db)
                        .set_client_to_redis_protocol(ProtocolVersion::RESP2);
                if e.tls {
                    b = b.set_client_to_redis_tls_mode(tls(true));
                }
                if let Some(user) = &e.username {
                    b = b.set_client_to_redis_username(user);
                }
                if let Some(password) = &e.password {
                    b = b.set_client_to_redis_password(password.expose_secret());
                }
                if s.tls {
                    b = b.set_client_to_sentinel_tls_mode(tls(true));
                }
                if let Some(user) = &s.username {
                    b = b.set_client_to_sentinel_username(user);
                }
                if let Some(password) = &s.password {
                    b = b.set_client_to_sentinel_password(password.expose_secret());
                }
                Target::Sentinel(tokio::sync::Mutex::new(b.build().map_err(config_error)?))
            }
            _ => Target::Fixed(self.plan.clients.clone()),
        };
        let manager = RedisManager {
            target,
            config: self.config(),
            generation: self.generation.clone(),
        };
        // No pool-level timeouts: the store bounds the pool wait, the connect and the command
        // together with one deadline. Without them the builder has nothing that can fail.
        Pool::builder(manager)
            .max_size(self.plan.pool_size)
            .build()
            .map_err(config_error)
    }

    fn build_cluster_client(&self) -> Result<ClusterClient, RedisConfigError> {
        let e = &self.plan.endpoint;
        let nodes: Vec<ConnectionInfo> = match &self.plan.topology {
            RedisTopology::Cluster { nodes } => nodes
                .iter()
                .map(|n| connection_info(e, &n.host, n.port, e.username.as_deref()))
                .collect(),
            _ => vec![connection_info(e, &e.host, e.port, e.username.as_deref())],
        };
        let mut b = ClusterClientBuilder::new(nodes)
            // Never resend on its own: after a dropped connection a counter update may have
            // run already. MOVED and ASK are followed in `Link::send`, where that is safe.
            .retries(0)
            .connection_timeout(self.plan.timeout)
            .response_timeout(self.plan.timeout)
            .use_protocol(ProtocolVersion::RESP2);
        if e.tls {
            b = b.tls(TlsMode::Secure);
        }
        if let Some(user) = &e.username {
            b = b.username(user);
        }
        if let Some(password) = &e.password {
            b = b.password(password.expose_secret());
        }
        b.build().map_err(config_error)
    }

    /// Whether this process talks to a cluster, asking the endpoint once in `auto` mode.
    async fn is_cluster(&self) -> Result<bool, RedisError> {
        if let Some(&cluster) = self.plan.detected.get() {
            return Ok(cluster);
        }
        // Boxed, like every once-only connect below: a request's future holds the largest of
        // its awaits, and these would make it several KB to move on every request.
        Box::pin(self.plan.detected.get_or_try_init(|| async {
                let e = &self.plan.endpoint;
                let mut conn = self.plan.clients.connect(&self.config()).await?;
                let info: String = redis::cmd("INFO")
                    .arg("cluster")
                    .query_async(&mut conn)
                    .await?;
                let cluster = info.lines().any(|l| l.trim() == "cluster_enabled:1");
                if cluster {
                    crate::telemetry::in_request(|| tracing::info!(
                        redis.host = %e.host, redis.port = e.port, topology = "cluster",
                        "REDIS_MODE=auto: the endpoint answers INFO cluster with cluster_enabled:1; using the cluster client"
                    ));
                } else {
                    crate::telemetry::in_request(|| tracing::info!(
                        redis.host = %e.host, redis.port = e.port, topology = "standalone",
                        "REDIS_MODE=auto: the endpoint is not a cluster node (cluster_enabled:0 or no cluster support); using it as one server"
                    ));
                }
                Ok(cluster)
            }))
            .await
            .copied()
    }

    /// A connection to send on; connects (and in `auto` mode, detects) on first use.
    pub async fn get(&self) -> Result<Link, GetError> {
        if let Some(link) = self.recent_link() {
            metrics::redis_pool_wait(Duration::ZERO);
            return Ok(link);
        }
        let waiting = Instant::now();
        let link = self.checkout().await;
        metrics::redis_pool_wait(waiting.elapsed());
        link
    }

    /// The connection handed out last, if it is still current and was used within
    /// [`IDLE_CHECK_AFTER`] (the pool would hand it out again without a check).
    fn recent_link(&self) -> Option<Link> {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let r = recent.as_mut()?;
        let now = Instant::now();
        if r.generation < self.generation.load(Ordering::Relaxed)
            || now.duration_since(r.used) > IDLE_CHECK_AFTER
        {
            *recent = None;
            return None;
        }
        r.used = now;
        Some(Link {
            conn: LinkConn::Single(r.conn.clone()),
            generation: r.generation,
        })
    }

    /// [`Self::get`] through the pool (or the cluster client).
    async fn checkout(&self) -> Result<Link, GetError> {
        if self.is_cluster().await.map_err(GetError::Redis)? {
            return match self.cached_cluster_link() {
                Some(link) => Ok(link),
                None => Box::pin(self.cluster_link()).await,
            };
        }
        let pool = match self.pool.get() {
            Some(pool) => pool,
            None => Box::pin(self.pool.get_or_try_init(|| async {
                let pool = self.build_pool()?;
                self.plan.pools.add(&pool);
                Ok::<_, RedisConfigError>(pool)
            }))
            .await
            .map_err(|e| GetError::Config(Box::new(e)))?,
        };
        match pool.get().await {
            Ok(pooled) => {
                *self.recent.lock().unwrap_or_else(PoisonError::into_inner) = Some(Recent {
                    conn: pooled.conn.clone(),
                    generation: pooled.generation,
                    used: Instant::now(),
                });
                Ok(Link {
                    conn: LinkConn::Single(pooled.conn.clone()),
                    generation: pooled.generation,
                })
            }
            Err(managed::PoolError::Backend(e)) => Err(GetError::Redis(e)),
            Err(e) => Err(GetError::Pool(Box::new(e))),
        }
    }

    /// The worker's one cluster connection. It is never replaced: the cluster client keeps
    /// the slot map and every node's address, reconnects a node by itself and refreshes the
    /// map on MOVED or when a node cannot be reached; a new client would know only the seed
    /// nodes, which may be the very nodes that died.
    async fn cluster_link(&self) -> Result<Link, GetError> {
        // One connect at a time: every request of the worker wants one at first. The caller
        // found no connection; another request may have made one while this one waited.
        let _gate = self.cluster_connecting.lock().await;
        if let Some(link) = self.cached_cluster_link() {
            return Ok(link);
        }
        let client = self
            .cluster
            .get_or_try_init(|| async { self.build_cluster_client() })
            .await
            .map_err(|e| GetError::Config(Box::new(e)))?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(GetError::Redis)?;
        if let Ok(mut slot) = self.cluster_conn.lock() {
            *slot = Some(conn.clone());
        }
        Ok(Link {
            conn: LinkConn::Cluster(conn),
            generation: 0,
        })
    }

    fn cached_cluster_link(&self) -> Option<Link> {
        let slot = self.cluster_conn.lock().ok()?;
        slot.as_ref().map(|conn| Link {
            conn: LinkConn::Cluster(conn.clone()),
            generation: 0,
        })
    }

    /// Replaces every pooled connection made up to `generation`: after a failed or demoted
    /// one, its pool-mates most likely share its fate, and with Sentinels the replacements ask
    /// for the primary again. (A cluster connection heals itself; see `cluster_link`.)
    pub fn retire(&self, generation: u64) {
        if self.generation.fetch_max(generation + 1, Ordering::Relaxed) <= generation {
            metrics::redis_pool_reset();
        }
    }

    /// Every worker pool made from these settings, for the metrics.
    pub fn pools(&self) -> PoolRegistry {
        self.plan.pools.clone()
    }

    /// Checks that the Redis can take writes: a primary (`ROLE`) or a healthy cluster.
    /// A demoted endpoint also retires the pool, so recovery does not wait for a request.
    pub async fn check_writable(&self) -> Result<(), CheckError> {
        let mut link = self.get().await.map_err(CheckError::Get)?;
        match &mut link.conn {
            LinkConn::Single(conn) => {
                let role: Vec<Value> = redis::cmd("ROLE")
                    .query_async(conn)
                    .await
                    .map_err(|e| CheckError::Redis(e, link.generation))?;
                match role.first() {
                    Some(Value::BulkString(r)) if r == b"master" => Ok(()),
                    _ => {
                        self.retire(link.generation);
                        Err(CheckError::NotWritable(NotWritable::Replica))
                    }
                }
            }
            LinkConn::Cluster(conn) => {
                // Asked of a primary (slot 0's), not of a random node that may be a replica.
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::new(0, SlotAddr::Master),
                ));
                let info = conn
                    .route_command(redis::cmd("CLUSTER").arg("INFO").clone(), route)
                    .await
                    .and_then(|v| Ok(String::from_redis_value(v)?))
                    .map_err(|e| CheckError::Redis(e, link.generation))?;
                if info.lines().any(|l| l.trim() == "cluster_state:ok") {
                    Ok(())
                } else {
                    Err(CheckError::NotWritable(NotWritable::ClusterDown))
                }
            }
        }
    }
}

/// Getting a connection failed.
#[derive(Debug)]
pub enum GetError {
    /// Connecting (or asking the Sentinels) failed.
    Redis(RedisError),
    /// The pool failed in another way.
    Pool(Box<dyn std::error::Error + Send + Sync>),
    /// The settings could not make a client.
    Config(Box<dyn std::error::Error + Send + Sync>),
}

/// The readiness check failed.
#[derive(Debug)]
pub enum CheckError {
    /// No connection.
    Get(GetError),
    /// The check command failed on the connection of this generation.
    Redis(RedisError, u64),
    /// Redis answered, but cannot take writes.
    NotWritable(NotWritable),
}

/// What a [`Link`] sends: one round trip either way.
#[derive(Clone, Copy)]
pub enum Request<'a> {
    /// One command; an `EVALSHA` carries its script's source, sent instead when Redis lacks
    /// the script.
    Command {
        /// The command.
        cmd: &'a Cmd,
        /// The Lua source behind an `EVALSHA`.
        script: Option<&'a str>,
    },
    /// Commands that Redis runs all or none of.
    Transaction(&'a Transaction),
}

/// Commands on one key that Redis runs together or not at all: `MULTI`, the commands, `EXEC`,
/// written in one go. It is cheaper for Redis than a Lua script doing the same (no script
/// call to set up), and just as atomic.
pub struct Transaction {
    /// `MULTI`, the commands and `EXEC`, sent as a plain pipeline so that every reply comes
    /// back, the `QUEUED`s included: an error there is why Redis discarded the transaction
    /// (and on a cluster, a `MOVED` there makes redis-rs refresh its slot map).
    pipe: Pipeline,
}

impl Transaction {
    /// `cmds`, to run as one transaction.
    pub fn of(cmds: impl IntoIterator<Item = Cmd>) -> Self {
        let mut pipe = redis::pipe();
        pipe.cmd("MULTI");
        for cmd in cmds {
            pipe.add_command(cmd);
        }
        pipe.cmd("EXEC");
        Self { pipe }
    }

    /// Replies in the pipeline: `OK`, one `QUEUED` per command, and `EXEC`'s.
    fn replies(&self) -> usize {
        self.pipe.len()
    }
}

/// `EXEC`'s replies, from every reply of a transaction's pipeline. An error where a command
/// was queued means Redis discarded the transaction and ran none of it: it is returned as if
/// the command had been sent alone, so it reads the same (`READONLY`, `OOM`, `MOVED`, ...).
/// An error inside `EXEC`'s replies comes from a command that ran; the others ran too. (An
/// error at `MULTI` itself, only an ACL without `MULTI` can cause, is returned as well, but
/// the commands then ran on their own; readiness names that ACL gap.)
fn exec_replies(mut replies: Vec<Value>) -> Result<Value, RedisError> {
    let exec = replies.pop();
    if let Some(e) = replies.into_iter().find_map(|v| v.extract_error().err()) {
        return Err(e);
    }
    match exec {
        Some(Value::ServerError(e)) => Err(unwrap_exec_abort(e.into())),
        Some(replies @ Value::Array(_)) => replies.extract_error(),
        _ => Err(RedisError::from((
            ErrorKind::UnexpectedReturnType,
            "EXEC answered neither replies nor an error",
        ))),
    }
}

/// Redis refused `EXEC` itself (a replica now, out of memory, ...) and discarded the
/// transaction: its `EXECABORT` carries the reason, which is what the caller must see.
fn unwrap_exec_abort(e: RedisError) -> RedisError {
    const PREFIX: &str = "Transaction discarded because of: ";
    if e.kind() != ErrorKind::Server(ServerErrorKind::ExecAbort) {
        return e;
    }
    let reason = e.detail().and_then(|d| d.strip_prefix(PREFIX));
    // The reason is an error reply without its '-' and line end; redis-rs's parser gives it
    // its kind back.
    match reason.map(|r| redis::parse_redis_value(format!("-{r}\r\n").as_bytes())) {
        Some(Ok(Value::ServerError(inner))) => inner.into(),
        _ => e,
    }
}

impl Link {
    /// Sends `request` in one round trip. An `EVALSHA` that finds no script is resent as
    /// `EVAL` (which also caches the script, so the next `EVALSHA` finds it); on a cluster,
    /// `MOVED` and `ASK`, which prove nothing ran, are followed.
    pub async fn send<T: FromRedisValue>(&mut self, request: Request<'_>) -> Result<T, RedisError> {
        match (&mut self.conn, request) {
            (LinkConn::Single(conn), Request::Command { cmd, script }) => {
                match cmd.query_async::<T>(conn).await {
                    Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                        match script {
                            Some(code) => eval_instead(cmd, code).query_async::<T>(conn).await,
                            None => Err(e),
                        }
                    }
                    result => result,
                }
            }
            (LinkConn::Single(conn), Request::Transaction(tx)) => {
                let replies = conn.req_packed_commands(&tx.pipe, 0, tx.replies()).await?;
                Ok(T::from_redis_value(exec_replies(replies)?)?)
            }
            // Boxed: its redirect handling is several times the size of the single-node
            // path's state, which every standalone request would otherwise carry and move.
            (LinkConn::Cluster(conn), request) => Box::pin(send_cluster(conn, request)).await,
        }
    }
}

/// Where an earlier reply sent the request: host, port and whether it was an `ASK`.
type Redirect = (String, u16, bool);

async fn send_cluster<T: FromRedisValue>(
    conn: &mut ClusterConnection,
    request: Request<'_>,
) -> Result<T, RedisError> {
    // The same call as EVAL, once a node lacked the script.
    let mut eval: Option<Cmd> = None;
    let mut redirect: Option<Redirect> = None;
    let mut last = None;
    for _ in 0..MAX_REDIRECTS {
        let result = match request {
            Request::Command { cmd, .. } => {
                let cmd = eval.as_ref().unwrap_or(cmd);
                let reply = match &redirect {
                    None => cmd.query_async::<Value>(conn).await,
                    Some(to) => {
                        let mut pipe = redis::pipe();
                        pipe.add_command(cmd.clone());
                        send_to(conn, &pipe, to).await.and_then(|mut r| {
                            r.pop().ok_or_else(|| {
                                RedisError::from((ErrorKind::Client, "a redirect gave no reply"))
                            })
                        })
                    }
                };
                // A pipeline carries a server error as a value.
                reply.and_then(Value::extract_error)
            }
            Request::Transaction(tx) => match &redirect {
                // Routed by the slot of the commands' key (MULTI and EXEC have none).
                None => conn.req_packed_commands(&tx.pipe, 0, tx.replies()).await,
                Some(to) => send_to(conn, &tx.pipe, to).await,
            }
            .and_then(exec_replies),
        };
        let e = match result {
            Ok(v) => return Ok(T::from_redis_value(v)?),
            Err(e) => e,
        };
        match (redirect_of(&e), request) {
            (Some(to), _) => redirect = Some(to),
            (
                None,
                Request::Command {
                    cmd,
                    script: Some(code),
                },
            ) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                eval = Some(eval_instead(cmd, code));
            }
            _ => return Err(e),
        }
        last = Some(e);
    }
    Err(last.unwrap_or_else(|| RedisError::from((ErrorKind::Client, "too many redirects"))))
}

/// Sends `pipe` to the node a `MOVED` or `ASK` named and answers its replies. After `ASK`,
/// `ASKING` goes first on the same connection; it holds for the next command, or for a whole
/// `MULTI` block, and its own `OK` is dropped.
async fn send_to(
    conn: &mut ClusterConnection,
    pipe: &Pipeline,
    (host, port, ask): &Redirect,
) -> Result<Vec<Value>, RedisError> {
    let route = SingleNodeRoutingInfo::ByAddress {
        host: host.clone(),
        port: *port,
    };
    if !*ask {
        return conn
            .route_pipeline(pipe.clone(), 0, pipe.len(), route)
            .await;
    }
    let mut asking = redis::pipe();
    asking.cmd("ASKING");
    for cmd in pipe.cmd_iter() {
        asking.add_command(cmd.clone());
    }
    let n = asking.len();
    let mut replies = conn.route_pipeline(asking, 0, n, route).await?;
    if !replies.is_empty() {
        replies.remove(0);
    }
    Ok(replies)
}

/// Where a `MOVED` or `ASK` points.
fn redirect_of(e: &RedisError) -> Option<Redirect> {
    let ask = match e.kind() {
        ErrorKind::Server(ServerErrorKind::Moved) => false,
        ErrorKind::Server(ServerErrorKind::Ask) => true,
        _ => return None,
    };
    let (host, port) = e.redirect_node().and_then(|(node, _)| split_node(node))?;
    Some((host, port, ask))
}

/// `host:port` of a redirect; the host may be an IPv6 literal.
fn split_node(node: &str) -> Option<(String, u16)> {
    let (host, port) = node.rsplit_once(':')?;
    Some((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port.parse().ok()?,
    ))
}

/// `EVAL <code> ...` with the arguments of `EVALSHA <sha> ...`.
fn eval_instead(cmd: &Cmd, code: &str) -> Cmd {
    let mut eval = redis::cmd("EVAL");
    eval.arg(code);
    for arg in cmd.args_iter().skip(2) {
        if let redis::Arg::Simple(bytes) = arg {
            eval.arg(bytes);
        }
    }
    eval
}

/// Whether an error reply proves that Redis did not run the command, so that sending it
/// again (after following a redirect or finding the new primary) cannot apply it twice.
pub fn did_not_run(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::ReadOnly
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::BusyLoading
                | ServerErrorKind::NoScript
        ) | ErrorKind::MasterNameNotFoundBySentinel
            | ErrorKind::ClusterConnectionNotFound
    )
}

/// Whether the error means the node was demoted and every connection to it should go.
pub fn demoted(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
    )
}

/// How to reach `host:port` with `e`'s TLS, database and credentials, as `username`.
fn connection_info(
    e: &RedisEndpoint,
    host: &str,
    port: u16,
    username: Option<&str>,
) -> ConnectionInfo {
    let addr = if e.tls {
        ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host.to_owned(), port)
    };
    let mut redis = RedisConnectionInfo::default()
        .set_db(e.db)
        .set_protocol(ProtocolVersion::RESP2);
    if let Some(user) = username {
        redis = redis.set_username(user);
    }
    if let Some(password) = &e.password {
        redis = redis.set_password(password.expose_secret());
    }
    match addr.into_connection_info() {
        Ok(info) => info.set_redis_settings(redis),
        Err(_) => unreachable!("a connection address always converts"),
    }
}

fn config_error(e: impl std::error::Error + Send + Sync + 'static) -> RedisConfigError {
    RedisConfigError(Box::new(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_replaces_evalsha_and_keeps_the_arguments() {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg("abc").arg(1).arg("sess:k").arg(30);
        let eval = eval_instead(&cmd, "return 1");
        let args: Vec<Vec<u8>> = eval
            .args_iter()
            .filter_map(|a| match a {
                redis::Arg::Simple(b) => Some(b.to_vec()),
                _ => None,
            })
            .collect();
        let expected: Vec<Vec<u8>> = ["EVAL", "return 1", "1", "sess:k", "30"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        assert_eq!(args, expected);
    }

    /// Replies as Redis writes them, through redis-rs's parser.
    fn replies(raw: &[&str]) -> Vec<Value> {
        raw.iter()
            .map(|r| redis::parse_redis_value(r.as_bytes()).expect("a reply"))
            .collect()
    }

    #[test]
    fn a_transaction_that_ran_gives_exec_its_replies() {
        let got = exec_replies(replies(&[
            "+OK\r\n",
            "+QUEUED\r\n",
            "+QUEUED\r\n",
            "*2\r\n:1\r\n:1\r\n",
        ]));
        assert_eq!(
            got.unwrap(),
            Value::Array(vec![Value::Int(1), Value::Int(1)])
        );
    }

    #[test]
    fn a_discarded_transaction_reads_as_its_first_refused_command() {
        let got = exec_replies(replies(&[
            "+OK\r\n",
            "-READONLY You can't write against a read only replica.\r\n",
            "-READONLY You can't write against a read only replica.\r\n",
            "-EXECABORT Transaction discarded because of previous errors.\r\n",
        ]))
        .unwrap_err();
        assert_eq!(got.kind(), ErrorKind::Server(ServerErrorKind::ReadOnly));
        assert!(did_not_run(&got) && demoted(&got));

        let moved = exec_replies(replies(&[
            "+OK\r\n",
            "-MOVED 3999 127.0.0.1:6381\r\n",
            "-EXECABORT Transaction discarded because of previous errors.\r\n",
        ]))
        .unwrap_err();
        assert_eq!(redirect_of(&moved), Some(("127.0.0.1".into(), 6381, false)));
    }

    #[test]
    fn an_exec_refused_itself_reads_as_the_reason_it_gives() {
        let got = exec_replies(replies(&[
            "+OK\r\n",
            "+QUEUED\r\n",
            "-EXECABORT Transaction discarded because of: OOM command not allowed when used memory > 'maxmemory'.\r\n",
        ]))
        .unwrap_err();
        assert_eq!(got.code(), Some("OOM"), "{got}");
        let other =
            exec_replies(replies(&["+OK\r\n", "-EXECABORT something else\r\n"])).unwrap_err();
        assert_eq!(other.kind(), ErrorKind::Server(ServerErrorKind::ExecAbort));
    }

    #[test]
    fn an_error_of_a_command_that_ran_is_reported() {
        let got = exec_replies(replies(&[
            "+OK\r\n",
            "+QUEUED\r\n",
            "+QUEUED\r\n",
            "*2\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n:1\r\n",
        ]))
        .unwrap_err();
        assert_eq!(got.code(), Some("WRONGTYPE"), "{got}");
        assert!(!did_not_run(&got));
    }

    #[test]
    fn redirect_nodes_split_into_host_and_port() {
        assert_eq!(split_node("10.0.0.1:7000"), Some(("10.0.0.1".into(), 7000)));
        assert_eq!(split_node("[::1]:7000"), Some(("::1".into(), 7000)));
        assert_eq!(split_node("nohost"), None);
    }
}
