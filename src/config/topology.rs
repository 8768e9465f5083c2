//! How the Redis is laid out: one endpoint, a primary watched by Sentinels, or a Redis Cluster.
//!
//! `REDIS_MODE`, `REDIS_SENTINELS`, `REDIS_SENTINEL_MASTER`, `REDIS_SENTINEL_PASSWORD` and
//! `REDIS_CLUSTER_NODES` choose it; a binding in `VCAP_SERVICES` can too (see `vcap.rs`). The
//! data node's credentials stay in `REDIS_URL` or the binding either way.

use secrecy::SecretString;

use super::ConfigError;
use super::redis::DEFAULT_REDIS_PORT;

/// The default Sentinel port, used when a sentinel address names none.
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// A `host:port` of a Sentinel or a cluster seed node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddress {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl std::fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Sentinels that know the primary of one named master; `Debug` never shows the password.
#[derive(Clone, Debug)]
pub struct SentinelSettings {
    /// The Sentinels to ask, in order.
    pub sentinels: Vec<NodeAddress>,
    /// The master's name in the Sentinels' configuration.
    pub master: String,
    /// The Sentinels' own password, if they require one (the data password is separate).
    pub password: Option<SecretString>,
    /// The Sentinels' own ACL user, if any.
    pub username: Option<String>,
    /// Whether to speak TLS to the Sentinels.
    pub tls: bool,
}

/// How the Redis is laid out, and so which client talks to it.
#[derive(Clone, Debug)]
pub enum RedisTopology {
    /// One endpoint, asked `INFO cluster` once at connect: a cluster's configuration
    /// endpoint (ElastiCache, Azure OSS clustering) switches to the cluster client.
    Auto,
    /// One endpoint that is (or is made, by a managed failover) the primary.
    Standalone,
    /// A primary found through Sentinels.
    Sentinel(Box<SentinelSettings>),
    /// A Redis Cluster, found from these seed nodes.
    Cluster {
        /// Seed nodes; the client learns the rest from them.
        nodes: Vec<NodeAddress>,
    },
}

impl RedisTopology {
    /// The name used in logs and settings.
    pub fn name(&self) -> &'static str {
        match self {
            RedisTopology::Auto => "auto",
            RedisTopology::Standalone => "standalone",
            RedisTopology::Sentinel(_) => "sentinel",
            RedisTopology::Cluster { .. } => "cluster",
        }
    }
}

/// `REDIS_MODE` as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Auto,
    Standalone,
    Sentinel,
    Cluster,
}

/// The topology variables, parsed but not yet combined with `REDIS_URL` or a binding.
#[derive(Debug)]
pub(super) struct TopologyVars {
    pub(super) mode: Mode,
    pub(super) sentinels: Option<Vec<NodeAddress>>,
    pub(super) sentinel_master: Option<String>,
    pub(super) sentinel_password: Option<SecretString>,
    pub(super) cluster_nodes: Option<Vec<NodeAddress>>,
}

impl TopologyVars {
    /// Parses and cross-checks the variables; each bad combination names a variable.
    pub(super) fn parse(
        mode: Option<&str>,
        sentinels: Option<&str>,
        sentinel_master: Option<&str>,
        sentinel_password: Option<&str>,
        cluster_nodes: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let mode = match mode.map(str::trim) {
            None => Mode::Auto,
            Some(v) if v.eq_ignore_ascii_case("auto") => Mode::Auto,
            Some(v) if v.eq_ignore_ascii_case("standalone") => Mode::Standalone,
            Some(v) if v.eq_ignore_ascii_case("sentinel") => Mode::Sentinel,
            Some(v) if v.eq_ignore_ascii_case("cluster") => Mode::Cluster,
            Some(v) => {
                return Err(ConfigError::Invalid {
                    var: "REDIS_MODE",
                    expected: "auto, standalone, sentinel or cluster",
                    got: v.to_owned(),
                });
            }
        };
        let sentinels = sentinels
            .map(|s| parse_nodes(s, "REDIS_SENTINELS", DEFAULT_SENTINEL_PORT))
            .transpose()?;
        let cluster_nodes = cluster_nodes
            .map(|s| parse_nodes(s, "REDIS_CLUSTER_NODES", DEFAULT_REDIS_PORT))
            .transpose()?;
        let sentinel_master = sentinel_master.map(|m| m.trim().to_owned());
        let conflict = |var: &'static str, why: &'static str| ConfigError::Conflict { var, why };
        if sentinels.is_some() && cluster_nodes.is_some() {
            return Err(conflict(
                "REDIS_CLUSTER_NODES",
                "cannot be set together with REDIS_SENTINELS; a Redis is either a cluster or watched by Sentinels",
            ));
        }
        if sentinels.is_some() && matches!(mode, Mode::Standalone | Mode::Cluster) {
            return Err(conflict(
                "REDIS_SENTINELS",
                "is set but REDIS_MODE is standalone or cluster; unset one of them",
            ));
        }
        if cluster_nodes.is_some() && matches!(mode, Mode::Standalone | Mode::Sentinel) {
            return Err(conflict(
                "REDIS_CLUSTER_NODES",
                "is set but REDIS_MODE is standalone or sentinel; unset one of them",
            ));
        }
        if sentinels.is_some() && sentinel_master.is_none() {
            return Err(conflict(
                "REDIS_SENTINEL_MASTER",
                "must name the master (as in `sentinel monitor <name> ...`) when REDIS_SENTINELS is set",
            ));
        }
        if sentinels.is_none() && sentinel_master.is_some() {
            return Err(conflict(
                "REDIS_SENTINEL_MASTER",
                "is set but REDIS_SENTINELS is not; list the Sentinels as host:port,host:port",
            ));
        }
        if sentinels.is_none() && sentinel_password.is_some() {
            return Err(conflict(
                "REDIS_SENTINEL_PASSWORD",
                "is set but REDIS_SENTINELS is not; list the Sentinels as host:port,host:port",
            ));
        }
        Ok(Self {
            mode,
            sentinels,
            sentinel_master,
            sentinel_password: sentinel_password.map(|p| SecretString::from(p.to_owned())),
            cluster_nodes,
        })
    }
}

/// Parses `host:port,host:port`; a missing port gets `default_port`.
pub(super) fn parse_nodes(
    text: &str,
    var: &'static str,
    default_port: u16,
) -> Result<Vec<NodeAddress>, ConfigError> {
    let bad = || ConfigError::Invalid {
        var,
        expected: "a comma-separated list of host:port",
        got: text.to_owned(),
    };
    let mut nodes = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        // An IPv6 literal is bracketed: [::1]:26379.
        let (host, port) = match part.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') || host.starts_with('[') => (
                host,
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(bad)?,
            ),
            _ => (part, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(bad());
        }
        nodes.push(NodeAddress {
            host: host.to_owned(),
            port,
        });
    }
    if nodes.is_empty() {
        return Err(bad());
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists_take_default_ports_and_bare_ipv6() {
        let nodes = parse_nodes("a:1, b ,[::1]:7", "X", 26379).unwrap();
        let got: Vec<String> = nodes.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["a:1", "b:26379", "::1:7"]);
    }

    #[test]
    fn junk_node_lists_are_refused() {
        for text in ["", " , ", "a:0", "a:x", "a:70000", "redis://a:1", "u@a:1"] {
            assert!(parse_nodes(text, "X", 1).is_err(), "{text:?} accepted");
        }
    }
}
