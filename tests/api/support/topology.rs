//! Real Redis topologies on random ports: a primary with a replica and three Sentinels, and a
//! Redis Cluster made by `redis-cli --cluster create`. Timeouts are short (Sentinel
//! `down-after-milliseconds` and `cluster-node-timeout` 1000 ms) so failovers take seconds.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deadpool_redis::redis;

use super::{RedisServer, ScratchDir, free_port};

/// The master name the Sentinels monitor.
pub const MASTER: &str = "sessions";

/// Arguments of a throwaway Redis node: no persistence.
const NO_PERSISTENCE: [&str; 4] = ["--save", "", "--appendonly", "no"];

/// TLS settings for a node that listens on `tls_port` beside its plain port (which the
/// harness keeps using), with certificates made by `tls::make_certificates` in `dir`.
/// Replication, the cluster bus and Sentinel's own connections use TLS too.
pub fn tls_args(dir: &Path, tls_port: u16) -> Vec<String> {
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    [
        "--tls-port".to_owned(),
        tls_port.to_string(),
        "--tls-cert-file".to_owned(),
        path("server.crt"),
        "--tls-key-file".to_owned(),
        path("server.key"),
        "--tls-ca-cert-file".to_owned(),
        path("ca.crt"),
        "--tls-auth-clients".to_owned(),
        "no".to_owned(),
        "--tls-replication".to_owned(),
        "yes".to_owned(),
    ]
    .into()
}

/// A synchronous connection to `127.0.0.1:port`.
pub fn conn(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"))
}

/// Runs `cmd` on `port`, panicking with the command in the message if it fails.
pub fn run<T: redis::FromRedisValue>(port: u16, cmd: &mut redis::Cmd) -> T {
    cmd.query(&mut conn(port))
        .unwrap_or_else(|e| panic!("command on {port}: {e}"))
}

/// Calls of each command on `port` since the last `CONFIG RESETSTAT`, from `INFO commandstats`.
pub fn command_calls(port: u16) -> Vec<(String, u64)> {
    let info: String = run(port, redis::cmd("INFO").arg("commandstats"));
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(":calls=")?;
            Some((name.to_owned(), rest.split(',').next()?.parse().ok()?))
        })
        .collect()
}

/// How many times `cmd` ran in `calls` (from [`command_calls`]); 0 when it never did.
pub fn calls_of(calls: &[(String, u64)], cmd: &str) -> u64 {
    calls
        .iter()
        .find(|(name, _)| name == cmd)
        .map_or(0, |(_, n)| *n)
}

/// Polls `check` every 50 ms until it holds, panicking with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until every replica holds each write its primary had when called, so a kill -9
/// of the primary loses only later writes, as asynchronous replication allows, never the
/// sessions made before: on a loaded machine a replica can trail by more than a moment.
pub fn wait_for_replicas_to_catch_up(primary: u16, replicas: &[u16]) {
    let offset = |port: u16, field: &str| -> u64 {
        let info: String = run(port, redis::cmd("INFO").arg("replication"));
        info.lines()
            .find_map(|l| l.strip_prefix(field)?.trim().parse().ok())
            .unwrap_or(0)
    };
    let target = offset(primary, "master_repl_offset:");
    for &replica in replicas {
        wait_until(Duration::from_secs(10), "a replica to catch up", || {
            offset(replica, "slave_repl_offset:") >= target
        });
    }
}

/// A `redis-server --sentinel` process, killed on drop.
pub struct Sentinel {
    /// Its port.
    pub port: u16,
    /// Its TLS port, if it has one.
    pub tls_port: Option<u16>,
    child: Child,
    _dir: ScratchDir,
}

impl Sentinel {
    /// A Sentinel watching `primary_port`; with `tls`, it also listens on `tls.1` and talks
    /// TLS to the nodes and other Sentinels.
    fn start(primary_port: u16, tls: Option<(&Path, u16)>) -> Self {
        let port = free_port();
        let dir = ScratchDir::new("sentinel");
        let conf: PathBuf = dir.0.join("sentinel.conf");
        let tls_conf = match tls {
            None => String::new(),
            Some((certs, tls_port)) => tls_args(certs, tls_port)
                .chunks(2)
                .map(|kv| format!("{} {}\n", kv[0].trim_start_matches("--"), kv[1]))
                .collect(),
        };
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n{tls_conf}\
                 sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 5000\n\
                 sentinel parallel-syncs {MASTER} 1\n",
                dir = dir.0.display()
            ),
        )
        .expect("write sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        wait_until(Duration::from_secs(10), "a Sentinel to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Sentinel {
            port,
            tls_port: tls.map(|t| t.1),
            child,
            _dir: dir,
        }
    }

    /// The primary's port this Sentinel currently names.
    pub fn master_port(&self) -> Option<u16> {
        let addr: Option<(String, String)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER)
            .query(&mut conn(self.port))
            .ok()?;
        addr?.1.parse().ok()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One primary, one replica and three Sentinels watching them.
pub struct SentinelSet {
    /// The nodes; which one is primary changes with failovers.
    pub nodes: Vec<RedisServer>,
    /// Each node's TLS port, when the set speaks TLS (what the Sentinels then announce).
    pub tls_ports: Option<Vec<u16>>,
    /// The Sentinels.
    pub sentinels: Vec<Sentinel>,
}

impl SentinelSet {
    /// Starts the set and waits until the Sentinels know the replica and each other, so a
    /// failover can be agreed on.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// The same, speaking TLS (certificates in `certs`) on every node and Sentinel.
    pub fn start_tls(certs: &Path) -> Self {
        Self::start_with(Some(certs))
    }

    fn start_with(certs: Option<&Path>) -> Self {
        let tls_ports: Option<Vec<u16>> = certs.map(|_| vec![free_port(), free_port()]);
        let node_args = |i: usize| -> Vec<String> {
            let mut args: Vec<String> = NO_PERSISTENCE.iter().map(|a| a.to_string()).collect();
            if let (Some(certs), Some(ports)) = (certs, &tls_ports) {
                args.extend(tls_args(certs, ports[i]));
            }
            args
        };
        let primary_args = node_args(0);
        let primary =
            RedisServer::start_with(&primary_args.iter().map(String::as_str).collect::<Vec<_>>());
        // With TLS, everything after this point names the TLS ports, as clients will see them.
        let primary_port = match &tls_ports {
            Some(ports) => ports[0],
            None => primary.port(),
        };
        let mut replica_args = node_args(1);
        replica_args.extend([
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary_port.to_string(),
        ]);
        let replica =
            RedisServer::start_with(&replica_args.iter().map(String::as_str).collect::<Vec<_>>());
        let sentinels: Vec<Sentinel> = (0..3)
            .map(|_| Sentinel::start(primary_port, certs.map(|c| (c, free_port()))))
            .collect();
        for s in &sentinels {
            wait_until(
                Duration::from_secs(20),
                "Sentinels to find the replica and each other",
                || {
                    let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
                        .arg("REPLICAS")
                        .arg(MASTER)
                        .query(&mut conn(s.port))
                        .unwrap_or_default();
                    let peers: Vec<redis::Value> = redis::cmd("SENTINEL")
                        .arg("SENTINELS")
                        .arg(MASTER)
                        .query(&mut conn(s.port))
                        .unwrap_or_default();
                    replicas.len() == 1 && peers.len() == 2
                },
            );
        }
        wait_until(Duration::from_secs(10), "the replica to sync", || {
            let info: String = run(replica.port(), redis::cmd("INFO").arg("replication"));
            info.contains("master_link_status:up")
        });
        SentinelSet {
            nodes: vec![primary, replica],
            tls_ports,
            sentinels,
        }
    }

    /// `REDIS_SENTINELS` for the app (the TLS ports when the set speaks TLS).
    pub fn sentinels_var(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.tls_port.unwrap_or(s.port)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The primary's port as the first Sentinel sees it.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(Sentinel::master_port)
    }

    /// The node that is primary now, by index into `nodes`.
    pub fn primary_index(&self) -> usize {
        let port = self.master_port().expect("a Sentinel names a primary");
        (0..self.nodes.len())
            .find(|&i| self.node_port(i) == port)
            .expect("the primary is one of ours")
    }

    /// Waits until the replica holds every write the primary had when called (see
    /// [`wait_for_replicas_to_catch_up`]).
    pub fn wait_for_replica_to_catch_up(&self) {
        let primary = self.primary_index();
        wait_for_replicas_to_catch_up(
            self.nodes[primary].port(),
            &[self.nodes[1 - primary].port()],
        );
    }

    /// Node `i`'s port as the Sentinels name it.
    fn node_port(&self, i: usize) -> u16 {
        match &self.tls_ports {
            Some(ports) => ports[i],
            None => self.nodes[i].port(),
        }
    }
}

/// A Redis Cluster of `primaries` primaries, each with `replicas` replicas.
pub struct RedisCluster {
    /// Every node, primaries first as `--cluster create` assigned them.
    pub nodes: Vec<RedisServer>,
    /// Each node's TLS port, when the cluster speaks TLS.
    pub tls_ports: Option<Vec<u16>>,
}

impl RedisCluster {
    /// Starts the nodes, joins them with `redis-cli --cluster create` and waits for
    /// `cluster_state:ok` on every node.
    pub fn start(primaries: usize, replicas: usize) -> Self {
        Self::start_with(primaries, replicas, None)
    }

    /// The same, each node also listening on a TLS port, with a TLS cluster bus; the app sees
    /// the TLS ports (Redis answers `CLUSTER SLOTS` with the ports of the asking connection's
    /// kind).
    pub fn start_tls(primaries: usize, replicas: usize, certs: &Path) -> Self {
        Self::start_with(primaries, replicas, Some(certs))
    }

    fn start_with(primaries: usize, replicas: usize, certs: Option<&Path>) -> Self {
        let args = [
            NO_PERSISTENCE.as_slice(),
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                // A replica that heard nothing from an idle primary for a while would
                // otherwise refuse to take over ("disconnected from master for longer than
                // allowed"); test data is never too old.
                "--cluster-replica-validity-factor",
                "0",
                // Slots of live primaries keep serving while one primary is down; the
                // default (yes) makes every node answer CLUSTERDOWN until the promotion.
                "--cluster-require-full-coverage",
                "no",
            ],
        ]
        .concat();
        let mut tls_ports = Vec::new();
        let nodes: Vec<RedisServer> = (0..primaries * (1 + replicas))
            .map(|_| {
                let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
                if let Some(certs) = certs {
                    let port = free_port();
                    tls_ports.push(port);
                    args.extend(tls_args(certs, port));
                    args.extend(["--tls-cluster".into(), "yes".into()]);
                }
                RedisServer::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>())
            })
            .collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli must be installed");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster {
            nodes,
            tls_ports: certs.map(|_| tls_ports),
        };
        cluster.wait_ok(Duration::from_secs(20));
        // A replica promoted before its first sync would serve an empty data set.
        for i in 0..cluster.nodes.len() {
            if cluster.role(i) == "slave" {
                wait_until(Duration::from_secs(20), "every replica to sync", || {
                    run::<String>(
                        cluster.nodes[i].port(),
                        redis::cmd("INFO").arg("replication"),
                    )
                    .contains("master_link_status:up")
                });
            }
        }
        cluster
    }

    /// Waits until every live node reports `cluster_state:ok` and knows every slot.
    pub fn wait_ok(&self, limit: Duration) {
        for n in &self.nodes {
            if !n.is_running() {
                continue;
            }
            wait_until(limit, "cluster_state:ok on every node", || {
                redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query::<String>(&mut conn(n.port()))
                    .is_ok_and(|i| i.contains("cluster_state:ok"))
            });
        }
    }

    /// `REDIS_CLUSTER_NODES` for the app (the TLS ports when the cluster speaks TLS).
    pub fn nodes_var(&self) -> String {
        (0..self.nodes.len())
            .map(|i| match &self.tls_ports {
                Some(ports) => ports[i],
                None => self.nodes[i].port(),
            })
            .map(|port| format!("127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The role of node `i` (`master` or `slave`), as it says itself.
    pub fn role(&self, i: usize) -> String {
        let role: Vec<redis::Value> = run(self.nodes[i].port(), &mut redis::cmd("ROLE"));
        match role.first() {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("ROLE answered {other:?}"),
        }
    }

    /// Indexes of the nodes that are primaries now.
    pub fn primaries(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running() && self.role(i) == "master")
            .collect()
    }

    /// Waits until node `i`'s replicas hold every write it had when called (see
    /// [`wait_for_replicas_to_catch_up`]).
    pub fn wait_for_replicas_of(&self, i: usize) {
        let id = self.id(i);
        let replicas: Vec<u16> = (0..self.nodes.len())
            .filter(|&j| j != i && self.nodes[j].is_running())
            .filter(|&j| {
                let nodes: String = run(self.nodes[j].port(), redis::cmd("CLUSTER").arg("NODES"));
                nodes
                    .lines()
                    .any(|l| l.contains("myself") && l.split(' ').nth(3) == Some(id.as_str()))
            })
            .map(|j| self.nodes[j].port())
            .collect();
        wait_for_replicas_to_catch_up(self.nodes[i].port(), &replicas);
    }

    /// Node `i`'s cluster id.
    pub fn id(&self, i: usize) -> String {
        run(self.nodes[i].port(), redis::cmd("CLUSTER").arg("MYID"))
    }

    /// Session keys held by node `i` (`KEYS` on a test node holding a handful).
    pub fn session_keys(&self, i: usize) -> Vec<String> {
        let keys: Vec<String> = run(self.nodes[i].port(), redis::cmd("KEYS").arg("sess:*"));
        keys.into_iter().filter(|k| k != "sess:secret").collect()
    }
}
