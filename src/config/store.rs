//! The session store: Redis (from `REDIS_URL` or `VCAP_SERVICES`) or the embedded one.

use std::time::Duration;

use super::env::{RawEnv, parse_num};
use super::topology::{Mode, RedisTopology, SentinelSettings, TopologyVars};
use super::{ConfigError, RedisEndpoint, VcapError, find_redis_binding_in};

/// The session store to build.
#[derive(Clone, Debug)]
pub enum StoreSettings {
    /// Redis, shared by every instance.
    Redis(RedisSettings),
    /// The embedded per-process store.
    Memory {
        /// Upper bound on stored sessions.
        max_sessions: usize,
    },
}

/// How to reach Redis and how long to wait for it.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// The data nodes' credentials, TLS and database; its host and port are the one endpoint
    /// in `auto` and `standalone` mode (and a seed in `cluster` mode), unused with Sentinels.
    pub endpoint: RedisEndpoint,
    /// How the Redis is laid out.
    pub topology: RedisTopology,
    /// Where the endpoint came from, for the start-up log.
    pub source: RedisSource,
    /// Redis connections per process, shared out between the HTTP workers.
    pub pool_size: usize,
    /// Deadline for Redis work in one request: pool wait, connect and command.
    pub timeout: Duration,
}

/// Where the Redis endpoint was configured.
#[derive(Clone, Debug)]
pub enum RedisSource {
    /// `REDIS_URL`.
    Url,
    /// `REDIS_SENTINELS` or `REDIS_CLUSTER_NODES` alone, with no credentials.
    Nodes,
    /// A `VCAP_SERVICES` binding.
    Binding {
        /// Binding name.
        name: String,
        /// Service label.
        label: String,
    },
}

impl StoreSettings {
    /// `SESSION_STORE`, `REDIS_URL`, `VCAP_SERVICES`, `REDIS_SERVICE_NAME`, `REDIS_MODE`,
    /// `REDIS_SENTINELS`, `REDIS_SENTINEL_MASTER`, `REDIS_SENTINEL_PASSWORD`,
    /// `REDIS_CLUSTER_NODES`, `REDIS_POOL_SIZE`, `REDIS_TIMEOUT_MS` and
    /// `MEMORY_STORE_MAX_SESSIONS`. The pool size defaults to one connection per HTTP worker.
    pub(super) fn from_raw(
        raw: &RawEnv,
        on_cloud_foundry: bool,
        http_workers: usize,
    ) -> Result<Self, ConfigError> {
        #[derive(PartialEq)]
        enum Choice {
            Auto,
            Redis,
            Memory,
        }
        let choice = match raw.session_store.as_deref().map(str::trim) {
            None => Choice::Auto,
            Some(v) if v.eq_ignore_ascii_case("auto") => Choice::Auto,
            Some(v) if v.eq_ignore_ascii_case("redis") => Choice::Redis,
            Some(v) if v.eq_ignore_ascii_case("memory") => Choice::Memory,
            Some(v) => {
                return Err(ConfigError::Invalid {
                    var: "SESSION_STORE",
                    expected: "auto, redis or memory",
                    got: v.to_owned(),
                });
            }
        };
        let pool_size = parse_num(
            raw.redis_pool_size.as_deref(),
            "REDIS_POOL_SIZE",
            "a number of connections between 1 and 256",
            // Connections are multiplexed: every request of a worker pipelines on its one
            // connection, and Redis reads and answers many commands per system call. More
            // connections only spread the same commands thinner: 8 made Redis do twice the
            // reads and writes per request (0.31 against 0.15) for no gain in throughput.
            http_workers,
            1..=256,
        )?;
        let timeout = Duration::from_millis(parse_num(
            raw.redis_timeout_ms.as_deref(),
            "REDIS_TIMEOUT_MS",
            "a number of milliseconds between 1 and 60000",
            500,
            1..=60_000,
        )?);
        let max_sessions = parse_num(
            raw.memory_store_max_sessions.as_deref(),
            "MEMORY_STORE_MAX_SESSIONS",
            "a number of sessions between 1 and 100000000",
            100_000,
            1..=100_000_000,
        )?;

        // Both documents are validated even when unused, so a broken binding is never a surprise later.
        let url = raw
            .redis_url
            .as_deref()
            .map(|u| RedisEndpoint::from_url(u).map_err(ConfigError::RedisUrl))
            .transpose()?;
        let services: Option<serde_json::Value> = raw
            .vcap_services
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| ConfigError::Vcap(VcapError::InvalidJson(e)))?;
        let vars = TopologyVars::parse(
            raw.redis_mode.as_deref(),
            raw.redis_sentinels.as_deref(),
            raw.redis_sentinel_master.as_deref(),
            raw.redis_sentinel_password.as_deref(),
            raw.redis_cluster_nodes.as_deref(),
        )?;
        if choice == Choice::Memory {
            return Ok(StoreSettings::Memory { max_sessions });
        }
        let found = match url {
            Some(endpoint) => Some((endpoint, RedisSource::Url, None)),
            None => match &services {
                Some(services) => {
                    find_redis_binding_in(services, raw.redis_service_name.as_deref())?.map(|b| {
                        let source = RedisSource::Binding {
                            name: b.name,
                            label: b.label,
                        };
                        (b.endpoint, source, b.topology)
                    })
                }
                None if raw.redis_service_name.is_some() => {
                    return Err(ConfigError::Vcap(VcapError::NoSuchService {
                        wanted: raw.redis_service_name.clone().unwrap_or_default(),
                        available: vec![],
                    }));
                }
                None => None,
            },
        };
        // The node lists alone are enough for a Redis without a password.
        let found = found.or_else(|| {
            let first = vars
                .sentinels
                .as_ref()
                .or(vars.cluster_nodes.as_ref())?
                .first()?;
            let endpoint = RedisEndpoint {
                host: first.host.clone(),
                port: first.port,
                tls: false,
                username: None,
                tentative_username: None,
                password: None,
                db: 0,
            };
            Some((endpoint, RedisSource::Nodes, None))
        });
        match found {
            Some((endpoint, source, from_binding)) => {
                let topology = choose_topology(vars, &endpoint, from_binding)?;
                Ok(StoreSettings::Redis(RedisSettings {
                    endpoint,
                    topology,
                    source,
                    pool_size,
                    timeout,
                }))
            }
            None if choice == Choice::Redis => Err(ConfigError::RedisRequired),
            None if on_cloud_foundry => Err(ConfigError::NoRedisOnCloudFoundry),
            None => Ok(StoreSettings::Memory { max_sessions }),
        }
    }
}

/// Combines the topology variables with what the endpoint's source said; the variables win.
fn choose_topology(
    vars: TopologyVars,
    endpoint: &RedisEndpoint,
    from_binding: Option<RedisTopology>,
) -> Result<RedisTopology, ConfigError> {
    if let (Some(sentinels), Some(master)) = (vars.sentinels, vars.sentinel_master) {
        return Ok(RedisTopology::Sentinel(Box::new(SentinelSettings {
            sentinels,
            master,
            password: vars.sentinel_password,
            username: None,
            tls: endpoint.tls,
        })));
    }
    if let Some(nodes) = vars.cluster_nodes {
        return Ok(RedisTopology::Cluster { nodes });
    }
    let seed = || {
        vec![super::NodeAddress {
            host: endpoint.host.clone(),
            port: endpoint.port,
        }]
    };
    Ok(match (vars.mode, from_binding) {
        (Mode::Auto, Some(t)) => t,
        (Mode::Auto, None) => RedisTopology::Auto,
        (Mode::Standalone, _) => RedisTopology::Standalone,
        (Mode::Sentinel, Some(t @ RedisTopology::Sentinel(_))) => t,
        (Mode::Sentinel, _) => {
            return Err(ConfigError::Conflict {
                var: "REDIS_SENTINELS",
                why: "must list the Sentinels as host:port,host:port when REDIS_MODE=sentinel and the binding names none",
            });
        }
        (Mode::Cluster, Some(t @ RedisTopology::Cluster { .. })) => t,
        (Mode::Cluster, _) => RedisTopology::Cluster { nodes: seed() },
    })
}
