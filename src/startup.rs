//! Builds the store, the HTTP server and its limits, and runs until SIGTERM.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::middleware::{ErrorHandlers, Next, from_fn};
use actix_web::{App, HttpServer, web};

use crate::config::{RedisSource, RedisTopology, Settings, StoreSettings};
use crate::routes::{self, AppInfo, Readiness};
use crate::session::store::{MemoryStore, RedisStore};
use crate::session::{
    SessionConfig, SessionError, SessionMiddleware, SessionStore, SigningKeys, StoreKind,
};
use crate::telemetry::{self, RequestLog, metrics};

/// Largest request body accepted. No route reads a body; this only bounds abuse.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest request target (path and query) accepted; longer ones get 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Largest total size of request header names and values; larger heads get 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Time a client has to send a complete request head, which cuts slowloris attacks.
pub const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle keep-alive connection is kept. It must outlive the idle timeout of the
/// proxy in front, so that the proxy is always the side that closes an idle connection: if we
/// closed first, the proxy could send a request on a connection we are closing and answer 502.
/// The gorouter keeps idle back-end connections for 90 s
/// (<https://docs.cloudfoundry.org/adminguide/routing-keepalive.html#app-idle-timeout>).
pub const KEEP_ALIVE: Duration = Duration::from_secs(120);
/// Open connections per worker thread; the platform's file-descriptor limit is 16384.
pub const MAX_CONNECTIONS_PER_WORKER: usize = 4096;

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The port could not be bound.
    #[error("cannot listen on 0.0.0.0:{port} (PORT)")]
    Bind {
        /// The port.
        port: u16,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The metrics port could not be bound.
    #[error("cannot listen on 0.0.0.0:{port} (METRICS_PORT; set it to off to disable metrics)")]
    BindMetrics {
        /// The port.
        port: u16,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The Redis pool could not be configured.
    #[error(transparent)]
    Redis(#[from] crate::session::store::redis::RedisConfigError),
    /// The session layer could not be set up.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The HTTP server failed.
    #[error("the HTTP server failed")]
    Server(#[source] std::io::Error),
}

/// The running service: a bound port and a server future, and the metrics listener.
pub struct Application {
    port: u16,
    server: Server,
    signals: Option<ShutdownSignals>,
    metrics: Option<MetricsListener>,
}

/// The Prometheus listener on `METRICS_PORT`, stopped together with the application.
struct MetricsListener {
    port: u16,
    server: Server,
}

impl Application {
    /// Binds the port and builds everything; Redis is connected to lazily, so it may be down.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        // rustls needs one process-wide crypto provider; a second install (tests) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();

        let signals = ShutdownSignals::install();
        // Bound (and the recorder installed) before anything records, so that a busy
        // METRICS_PORT fails the start rather than being found out later; and before the
        // HTTP port, so whoever sees the service listening can scrape it too.
        let metrics_listener = match settings.http.metrics_port {
            Some(metrics_port) => {
                let bind = |source| StartupError::BindMetrics {
                    port: metrics_port,
                    source,
                };
                let listener = TcpListener::bind(("0.0.0.0", metrics_port)).map_err(bind)?;
                let bound = listener.local_addr().map_err(bind)?.port();
                Some((listener, bound, metrics::install()))
            }
            None => None,
        };
        let port = settings.http.port;
        let listener = TcpListener::bind(("0.0.0.0", port))
            .map_err(|source| StartupError::Bind { port, source })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { port, source })?
            .port();
        let mut pools = None;

        let mut app = match &settings.store {
            StoreSettings::Redis(redis) => {
                let e = &redis.endpoint;
                let topology = redis.topology.name();
                match &redis.source {
                    RedisSource::Binding { name, label } => tracing::info!(
                        binding.name = %name, binding.label = %label, redis.host = %e.host,
                        redis.port = e.port, redis.tls = e.tls, redis.topology = topology,
                        "session store: Redis from VCAP_SERVICES"
                    ),
                    RedisSource::Url => tracing::info!(
                        redis.host = %e.host, redis.port = e.port, redis.tls = e.tls,
                        redis.topology = topology, "session store: Redis from REDIS_URL"
                    ),
                    RedisSource::Nodes => tracing::info!(
                        redis.host = %e.host, redis.port = e.port, redis.topology = topology,
                        "session store: Redis from REDIS_SENTINELS or REDIS_CLUSTER_NODES"
                    ),
                }
                match &redis.topology {
                    RedisTopology::Sentinel(s) => tracing::info!(
                        redis.sentinel.master = %s.master,
                        redis.sentinels = %s.sentinels.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
                        "topology: sentinel (the primary is asked of the Sentinels on every new connection)"
                    ),
                    RedisTopology::Cluster { nodes } => tracing::info!(
                        redis.cluster.seeds = %nodes.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
                        "topology: cluster"
                    ),
                    RedisTopology::Standalone => {
                        tracing::info!("topology: standalone (REDIS_MODE=standalone)")
                    }
                    RedisTopology::Auto => tracing::info!(
                        "topology: auto (the endpoint is asked INFO cluster at first connect)"
                    ),
                }
                // The pool size is per process; each worker thread gets its share.
                let per_worker = redis.pool_size.div_ceil(settings.http.workers).max(1);
                let template = Arc::new(RedisStore::new(
                    e,
                    &redis.topology,
                    per_worker,
                    redis.timeout,
                    &settings.session.key_prefix,
                )?);
                pools = Some(template.pools());
                Self::serve(
                    move || Arc::new(template.for_worker()),
                    listener,
                    port,
                    &settings,
                )
            }
            StoreSettings::Memory { max_sessions } => {
                tracing::warn!(
                    max_sessions,
                    "session store: in-memory; sessions are per instance and lost on restart. \
                     Set REDIS_URL or bind a Redis service to share them"
                );
                // One store for the whole process: every worker must see the same sessions.
                let store = Arc::new(MemoryStore::new(*max_sessions));
                Self::serve(move || store.clone(), listener, port, &settings)
            }
        }?;
        app.signals = signals;
        if let Some((listener, port, handle)) = metrics_listener {
            metrics::build_info(
                StoreKind::from(&settings.store).as_str(),
                topology(&settings.store),
            );
            let server = metrics::serve(listener, handle, pools)
                .map_err(|source| StartupError::BindMetrics { port, source })?;
            tracing::info!(
                metrics_port = port,
                "metrics on http://0.0.0.0:{port}/metrics"
            );
            app.metrics = Some(MetricsListener { port, server });
        }
        Ok(app)
    }

    /// Starts the server; `store_for_worker` runs once on each worker thread.
    fn serve<S, F>(
        store_for_worker: F,
        listener: TcpListener,
        port: u16,
        settings: &Settings,
    ) -> Result<Self, StartupError>
    where
        S: SessionStore,
        F: Fn() -> Arc<S> + Clone + Send + 'static,
    {
        let kind = StoreKind::from(&settings.store);
        let keys = Arc::new(SigningKeys::for_store(&settings.session.secrets, kind)?);
        let session_config = SessionConfig::from(settings);
        let readiness_timeout = session_config.store_timeout;
        let info = web::Data::new(AppInfo::from(settings));

        let server = HttpServer::new(move || {
            // Runs on each worker thread, inside its runtime.
            telemetry::output::batch_this_thread();
            let store = store_for_worker();
            let readiness = web::Data::new(Readiness {
                store: store.clone(),
                timeout: readiness_timeout,
            });
            App::new()
                .app_data(info.clone())
                .app_data(readiness)
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                .configure(routes::configure)
                .wrap(SessionMiddleware::new(
                    store,
                    keys.clone(),
                    session_config.clone(),
                ))
                .wrap(ErrorHandlers::new().default_handler_server(routes::render_server_errors))
                .wrap(from_fn(enforce_limits))
                .wrap(RequestLog)
        })
        .workers(settings.http.workers)
        .max_connections(MAX_CONNECTIONS_PER_WORKER)
        .keep_alive(KEEP_ALIVE)
        .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
        .client_disconnect_timeout(Duration::from_secs(1))
        .shutdown_timeout(settings.http.shutdown_timeout.as_secs())
        // SIGINT would otherwise be a hard stop; both signals drain in `run`.
        .disable_signals()
        .listen(listener)
        .map_err(|source| StartupError::Bind { port, source })?
        .run();

        tracing::info!(
            port,
            store = %kind,
            instance_index = settings.platform.instance_index,
            instance_guid = settings.platform.instance_guid.as_deref().unwrap_or(""),
            ttl_seconds = settings.session.ttl.as_secs(),
            workers = settings.http.workers,
            "listening on 0.0.0.0:{port}"
        );
        Ok(Self {
            port,
            server,
            signals: None,
            metrics: None,
        })
    }

    /// The port actually bound (useful with `PORT=0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The metrics port actually bound; `None` with `METRICS_PORT=off`.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|m| m.port)
    }

    /// A handle to stop the server gracefully from elsewhere (tests).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM or SIGINT, then stops accepting, lets in-flight requests finish
    /// within the shutdown timeout. Each worker's Redis pool closes as that worker stops.
    /// The metrics listener serves until the application has stopped, then stops too.
    pub async fn run(self) -> Result<(), StartupError> {
        let handle = self.server.handle();
        let signals = self.signals;
        tokio::spawn(async move {
            if let Some(signals) = signals {
                let signal = signals.recv().await;
                tracing::info!(signal, "shutting down: draining in-flight requests");
                handle.stop(true).await;
            }
        });
        let metrics = self.metrics.map(|m| {
            let stop = m.server.handle();
            // Its own task: a failure of the metrics listener never stops the application.
            let serving = tokio::spawn(async move {
                if let Err(e) = m.server.await {
                    tracing::error!(error.chain = %telemetry::error_chain(&e), "the metrics listener failed");
                }
            });
            (stop, serving)
        });
        let result = self.server.await.map_err(StartupError::Server);
        if let Some((stop, serving)) = metrics {
            stop.stop(false).await;
            let _ = serving.await;
        }
        tracing::info!("stopped");
        result
    }
}

/// The `topology` label of the build info: `REDIS_MODE` as configured (`auto` finds out
/// per connection whether the endpoint is a cluster).
fn topology(store: &StoreSettings) -> &'static str {
    match store {
        StoreSettings::Redis(redis) => redis.topology.name(),
        StoreSettings::Memory { .. } => "in-process",
    }
}

/// Waits for SIGTERM (Cloud Foundry's stop) or SIGINT (Ctrl-C); `None` if neither can be watched.
/// SIGTERM and SIGINT handlers, installed before the port is bound: a signal that arrives
/// as soon as the port answers must already drain rather than kill the process.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> Option<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Some(Self {
            term: signal(SignalKind::terminate()).ok()?,
            int: signal(SignalKind::interrupt()).ok()?,
        })
    }

    async fn recv(mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Refuses oversized targets and bodies before any handler runs.
async fn enforce_limits(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let target_len = req.path().len() + req.query_string().len();
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    let refusal = if target_len > MAX_URI_BYTES {
        Some((StatusCode::URI_TOO_LONG, "request target too long"))
    } else if header_bytes > MAX_HEADER_BYTES {
        Some((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers too large",
        ))
    } else {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        // A length past usize::MAX is too large too, rather than wrapped around.
        declared
            .filter(|&n| usize::try_from(n).map_or(true, |n| n > MAX_BODY_BYTES))
            .map(|_| (StatusCode::PAYLOAD_TOO_LARGE, "request body too large"))
    };
    match refusal {
        Some((status, message)) => {
            let mut response = routes::error_response(req.path(), status, message);
            // The unread body would otherwise be drained first; closing is cheaper.
            response
                .head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
            Ok(req.into_response(response).map_into_right_body())
        }
        None => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
    }
}
