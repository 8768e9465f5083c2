//! Typed settings, read once from the environment and validated before anything starts.
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `PORT` | `8080` | listen on `0.0.0.0:PORT` |
//! | `METRICS_PORT` | `9090` | Prometheus `/metrics` on `0.0.0.0:METRICS_PORT`; `off` disables it |
//! | `VCAP_APPLICATION` | unset | JSON; when set we are on Cloud Foundry |
//! | `VCAP_SERVICES` | unset | JSON of the bound services, searched for a Redis |
//! | `CF_INSTANCE_INDEX` | `0` (or `instance_index` from `VCAP_APPLICATION`) | this instance's index |
//! | `CF_INSTANCE_GUID` | unset | this instance's GUID, for logs |
//! | `REDIS_URL` | unset | explicit `redis://` or `rediss://` URL; wins over `VCAP_SERVICES` |
//! | `REDIS_SERVICE_NAME` | unset | the binding to use, by `name` or `instance_name` |
//! | `REDIS_MODE` | `auto` | `auto`, `standalone`, `sentinel` or `cluster` |
//! | `REDIS_SENTINELS` | unset | `host:port,...` of the Sentinels |
//! | `REDIS_SENTINEL_MASTER` | unset | the master's name the Sentinels know |
//! | `REDIS_SENTINEL_PASSWORD` | unset | the Sentinels' own password |
//! | `REDIS_CLUSTER_NODES` | unset | `host:port,...` seed nodes of a Redis Cluster |
//! | `SESSION_STORE` | `auto` | `auto`, `redis` or `memory` |
//! | `SESSION_SECRET` | unset | comma-separated secrets of 32+ bytes; the first signs, all verify |
//! | `SESSION_TTL_SECONDS` | `1800` | sliding session lifetime |
//! | `SESSION_COOKIE_NAME` | `sid` | never `JSESSIONID`, which the CF router makes sticky |
//! | `SESSION_KEY_PREFIX` | `sess` | prefix of the Redis keys |
//! | `COOKIE_SECURE` | `auto` | `auto`, `true` or `false` |
//! | `REDIS_POOL_SIZE` | `HTTP_WORKERS` | Redis connections per process (one per worker) |
//! | `REDIS_TIMEOUT_MS` | `500` | deadline for any Redis work in a request |
//! | `MEMORY_STORE_MAX_SESSIONS` | `100000` | bound of the embedded store |
//! | `HTTP_WORKERS` | `2` | HTTP worker threads |
//! | `SHUTDOWN_TIMEOUT_SECONDS` | `8` | grace period after SIGTERM |
//! | `LOG_FORMAT` | `json` on CF, else `text` | log line format |
//! | `RUST_LOG` | `info` | log filter |

mod env;
mod error;
mod http;
mod log;
mod platform;
mod redis;
mod session;
mod store;
mod topology;
mod vcap;

pub use self::error::ConfigError;
pub use self::http::HttpSettings;
pub use self::log::{LogFormat, LogSettings};
pub use self::platform::Platform;
pub use self::redis::{RedisEndpoint, RedisUrlError};
pub use self::session::{CookieSecure, MIN_SECRET_BYTES, SessionSettings};
pub use self::store::{RedisSettings, RedisSource, StoreSettings};
pub use self::topology::{NodeAddress, RedisTopology, SentinelSettings};
pub use self::vcap::{RedisBinding, VcapError, find_redis_binding, find_redis_binding_in};

use self::env::RawEnv;
#[cfg(test)]
use self::env::VARIABLES;

/// Everything the service needs to start, already validated.
#[derive(Clone, Debug)]
pub struct Settings {
    /// HTTP server settings.
    pub http: HttpSettings,
    /// Facts about the platform instance.
    pub platform: Platform,
    /// Which session store to use.
    pub store: StoreSettings,
    /// Session and cookie behaviour.
    pub session: SessionSettings,
    /// Log output.
    pub log: LogSettings,
}

impl Settings {
    /// Reads and validates the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars_os().filter_map(|(k, v)| {
            // A non-UTF-8 value of a variable we read is reported as unparsable below.
            Some((k.into_string().ok()?, v.to_string_lossy().into_owned()))
        }))
    }

    /// Reads and validates settings from the given variables, as if they were the environment.
    pub fn from_vars<I>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let raw = RawEnv::from_vars(vars)?;
        let http = HttpSettings::from_raw(&raw)?;
        let platform = Platform::from_raw(&raw)?;
        let session = SessionSettings::from_raw(&raw)?;
        let store = StoreSettings::from_raw(&raw, platform.on_cloud_foundry, http.workers)?;
        let log = LogSettings::from_raw(&raw, platform.on_cloud_foundry)?;
        Ok(Settings {
            http,
            platform,
            store,
            session,
            log,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::vcap::tests::fixture;
    use super::*;
    use proptest::prelude::*;
    use secrecy::ExposeSecret;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn error(vars: &[(&str, &str)]) -> String {
        settings(vars)
            .expect_err("expected a configuration error")
            .to_string()
    }

    #[test]
    fn an_empty_environment_gives_the_local_defaults() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.http.port, 8080);
        assert_eq!(s.http.metrics_port, Some(9090));
        assert!(!s.platform.on_cloud_foundry);
        assert!(matches!(
            s.store,
            StoreSettings::Memory {
                max_sessions: 100_000
            }
        ));
        assert_eq!(s.session.ttl, Duration::from_secs(1800));
        assert_eq!(s.session.cookie_name, "sid");
        assert_eq!(s.session.cookie_secure, CookieSecure::Auto);
        assert_eq!(s.log.format, LogFormat::Text);
        assert_eq!(s.log.filter, "info");
        assert!(s.session.secrets.is_empty());
    }

    #[test]
    fn on_cloud_foundry_a_bound_redis_is_used_and_logs_are_json() {
        let app = &fixture("vcap-application.json");
        let services = &fixture("p.redis-on-demand-tls.json");
        let s = settings(&[("VCAP_APPLICATION", app), ("VCAP_SERVICES", services)]).unwrap();
        assert!(s.platform.on_cloud_foundry);
        assert_eq!(
            s.platform.instance_index, 2,
            "falls back to VCAP_APPLICATION"
        );
        assert_eq!(s.platform.app_name.as_deref(), Some("rust-sessions"));
        assert_eq!(s.log.format, LogFormat::Json);
        let StoreSettings::Redis(r) = s.store else {
            panic!("expected redis")
        };
        assert!(r.endpoint.tls);
        assert!(
            matches!(r.source, RedisSource::Binding { ref name, .. } if name == "redis-sessions")
        );
    }

    #[test]
    fn redis_url_wins_over_vcap_services() {
        let services = &fixture("ambiguous-two-p-redis.json");
        let s = settings(&[
            ("REDIS_URL", "redis://127.0.0.1:7777"),
            ("VCAP_SERVICES", services),
        ])
        .unwrap();
        let StoreSettings::Redis(r) = s.store else {
            panic!("expected redis")
        };
        assert_eq!(r.endpoint.port, 7777);
        assert!(matches!(r.source, RedisSource::Url));
    }

    fn redis_of(vars: &[(&str, &str)]) -> RedisSettings {
        match settings(vars).unwrap().store {
            StoreSettings::Redis(r) => r,
            other => panic!("expected redis, got {other:?}"),
        }
    }

    #[test]
    fn sentinels_take_the_data_credentials_from_redis_url() {
        let r = redis_of(&[
            ("REDIS_SENTINELS", "s1:5000, s2"),
            ("REDIS_SENTINEL_MASTER", "mymaster"),
            ("REDIS_SENTINEL_PASSWORD", "sentinel-pw"),
            ("REDIS_URL", "rediss://:data-pw@ignored:1/2"),
        ]);
        let RedisTopology::Sentinel(s) = &r.topology else {
            panic!("expected sentinel, got {:?}", r.topology)
        };
        let got: Vec<String> = s.sentinels.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["s1:5000", "s2:26379"]);
        assert_eq!(s.master, "mymaster");
        assert!(s.tls, "rediss:// means TLS to the Sentinels too");
        assert_eq!(s.password.as_ref().unwrap().expose_secret(), "sentinel-pw");
        assert_eq!(
            r.endpoint.password.as_ref().unwrap().expose_secret(),
            "data-pw"
        );
        assert_eq!(r.endpoint.db, 2);
        assert!(!format!("{r:?}").contains("sentinel-pw"));
    }

    #[test]
    fn cluster_nodes_alone_are_a_redis_without_a_password() {
        let r = redis_of(&[("REDIS_CLUSTER_NODES", "c1:7000,c2:7001")]);
        let RedisTopology::Cluster { nodes } = &r.topology else {
            panic!("expected cluster, got {:?}", r.topology)
        };
        assert_eq!(nodes.len(), 2);
        assert!(matches!(r.source, RedisSource::Nodes));
    }

    #[test]
    fn redis_mode_picks_the_topology_of_one_endpoint() {
        let cases = [
            (None, "auto"),
            (Some("standalone"), "standalone"),
            (Some("CLUSTER"), "cluster"),
        ];
        for (mode, expected) in cases {
            let mut vars = vec![("REDIS_URL", "redis://h:7000")];
            if let Some(m) = mode {
                vars.push(("REDIS_MODE", m));
            }
            assert_eq!(
                redis_of(&vars).topology.name(),
                expected,
                "REDIS_MODE={mode:?}"
            );
        }
    }

    #[test]
    fn session_store_memory_overrides_a_configured_redis() {
        let s = settings(&[("REDIS_URL", "redis://h"), ("SESSION_STORE", "memory")]).unwrap();
        assert!(matches!(s.store, StoreSettings::Memory { .. }));
    }

    #[test]
    fn secrets_are_split_on_commas_and_kept_in_order() {
        let two = format!("{SECRET}, {}", SECRET.to_uppercase());
        let s = settings(&[("SESSION_SECRET", &two)]).unwrap();
        let got: Vec<&str> = s
            .session
            .secrets
            .iter()
            .map(|s| s.expose_secret())
            .collect();
        assert_eq!(got, [SECRET.to_owned(), SECRET.to_uppercase()]);
        assert!(
            !format!("{s:?}").contains(SECRET),
            "Debug must not show secrets"
        );
    }

    #[test]
    fn redis_pool_defaults_to_one_connection_per_http_worker() {
        let pool = |vars: &[(&str, &str)]| match settings(vars).unwrap().store {
            StoreSettings::Redis(r) => r.pool_size,
            StoreSettings::Memory { .. } => panic!("expected Redis"),
        };
        assert_eq!(pool(&[("REDIS_URL", "redis://h")]), 2);
        assert_eq!(
            pool(&[("REDIS_URL", "redis://h"), ("HTTP_WORKERS", "5")]),
            5
        );
        let set = [
            ("REDIS_URL", "redis://h"),
            ("HTTP_WORKERS", "5"),
            ("REDIS_POOL_SIZE", "12"),
        ];
        assert_eq!(pool(&set), 12);
    }

    #[test]
    fn metrics_port_off_disables_the_listener_in_any_case() {
        for off in ["off", "OFF", " Off "] {
            let s = settings(&[("METRICS_PORT", off)]).unwrap();
            assert_eq!(s.http.metrics_port, None, "{off:?}");
        }
        let s = settings(&[("METRICS_PORT", "0"), ("PORT", "0")]).unwrap();
        assert_eq!(s.http.metrics_port, Some(0), "0 picks a free port");
    }

    #[test]
    fn each_bad_value_is_one_line_naming_its_variable() {
        let app = &fixture("vcap-application.json");
        let two = &fixture("ambiguous-two-p-redis.json");
        let short = format!("{SECRET},short");
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("PORT", "eighty")], "PORT must be a port number"),
            (&[("PORT", "70000")], "PORT must be a port number"),
            (
                &[("METRICS_PORT", "on")],
                "METRICS_PORT must be a port number",
            ),
            (
                &[("METRICS_PORT", "65536")],
                "METRICS_PORT must be a port number",
            ),
            (
                &[("PORT", "9000"), ("METRICS_PORT", "9000")],
                "METRICS_PORT must be a port number between 0 and 65535 other than PORT's",
            ),
            (
                &[("VCAP_SERVICES", "{not json")],
                "VCAP_SERVICES is not valid JSON",
            ),
            (
                &[("VCAP_APPLICATION", "[")],
                "VCAP_APPLICATION is not valid JSON",
            ),
            (
                &[("REDIS_URL", "http://h:1")],
                "REDIS_URL must be a redis:// or rediss:// URL",
            ),
            (
                &[("REDIS_URL", "localhost:6379")],
                "REDIS_URL must be a redis:// or rediss:// URL",
            ),
            (
                &[("SESSION_SECRET", &short)],
                "SESSION_SECRET part 2 is 5 bytes",
            ),
            (
                &[("SESSION_STORE", "redis")],
                "SESSION_STORE=redis but no Redis is configured",
            ),
            (
                &[("SESSION_STORE", "disk")],
                "SESSION_STORE must be auto, redis or memory",
            ),
            (&[("VCAP_APPLICATION", app)], "cf create-service"),
            (&[("VCAP_SERVICES", two)], "REDIS_SERVICE_NAME"),
            (
                &[("VCAP_SERVICES", two), ("REDIS_SERVICE_NAME", "x")],
                "REDIS_SERVICE_NAME=\"x\" matches no binding",
            ),
            (
                &[("REDIS_SERVICE_NAME", "x")],
                "REDIS_SERVICE_NAME=\"x\" matches no binding",
            ),
            (
                &[("SESSION_TTL_SECONDS", "0")],
                "SESSION_TTL_SECONDS must be",
            ),
            (
                &[("SESSION_COOKIE_NAME", "JSESSIONID")],
                "SESSION_COOKIE_NAME must be",
            ),
            (
                &[("SESSION_COOKIE_NAME", "a b")],
                "SESSION_COOKIE_NAME must be",
            ),
            (
                &[("COOKIE_SECURE", "yes")],
                "COOKIE_SECURE must be auto, true or false",
            ),
            (&[("REDIS_POOL_SIZE", "0")], "REDIS_POOL_SIZE must be"),
            (&[("REDIS_TIMEOUT_MS", "-1")], "REDIS_TIMEOUT_MS must be"),
            (
                &[("SHUTDOWN_TIMEOUT_SECONDS", "soon")],
                "SHUTDOWN_TIMEOUT_SECONDS must be",
            ),
            (&[("LOG_FORMAT", "xml")], "LOG_FORMAT must be json or text"),
            (&[("RUST_LOG", "info,[[[")], "RUST_LOG must be"),
            // Found by fuzzing: this made tracing-subscriber's parser panic.
            (
                &[(
                    "RUST_LOG",
                    " P\u{5bc81}\r\u{31377}=G'\u{feff}?*¥\u{7f}\"\0{)\u{496e1}\\<\t\u{4}",
                )],
                "RUST_LOG must be",
            ),
            (
                &[("CF_INSTANCE_INDEX", "first")],
                "CF_INSTANCE_INDEX must be",
            ),
            (
                &[("REDIS_MODE", "ring")],
                "REDIS_MODE must be auto, standalone, sentinel or cluster",
            ),
            (
                &[("REDIS_SENTINELS", "s:26379")],
                "REDIS_SENTINEL_MASTER must name the master",
            ),
            (
                &[("REDIS_SENTINEL_MASTER", "m")],
                "REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS is not",
            ),
            (
                &[("REDIS_SENTINEL_PASSWORD", "pw")],
                "REDIS_SENTINEL_PASSWORD is set but REDIS_SENTINELS is not",
            ),
            (
                &[("REDIS_SENTINELS", "s:0"), ("REDIS_SENTINEL_MASTER", "m")],
                "REDIS_SENTINELS must be a comma-separated list of host:port",
            ),
            (
                &[("REDIS_CLUSTER_NODES", "a:1,b:x")],
                "REDIS_CLUSTER_NODES must be a comma-separated list of host:port",
            ),
            (
                &[
                    ("REDIS_SENTINELS", "s"),
                    ("REDIS_SENTINEL_MASTER", "m"),
                    ("REDIS_CLUSTER_NODES", "c"),
                ],
                "REDIS_CLUSTER_NODES cannot be set together with REDIS_SENTINELS",
            ),
            (
                &[
                    ("REDIS_MODE", "cluster"),
                    ("REDIS_SENTINELS", "s"),
                    ("REDIS_SENTINEL_MASTER", "m"),
                ],
                "REDIS_SENTINELS is set but REDIS_MODE is standalone or cluster",
            ),
            (
                &[("REDIS_MODE", "sentinel"), ("REDIS_CLUSTER_NODES", "c")],
                "REDIS_CLUSTER_NODES is set but REDIS_MODE is standalone or sentinel",
            ),
            (
                &[("REDIS_MODE", "sentinel"), ("REDIS_URL", "redis://h")],
                "REDIS_SENTINELS must list the Sentinels",
            ),
        ];
        for (vars, expected) in cases {
            let msg = error(vars);
            assert!(
                msg.contains(expected),
                "{vars:?}: expected {expected:?} in {msg:?}"
            );
            assert!(
                !msg.contains('\n'),
                "{vars:?}: message spans lines: {msg:?}"
            );
        }
    }

    #[test]
    fn the_cloud_foundry_message_offers_both_ways_out() {
        let app = &fixture("vcap-application.json");
        let msg = error(&[("VCAP_APPLICATION", app)]);
        assert!(
            msg.contains("cf bind-service") && msg.contains("SESSION_STORE=memory"),
            "{msg}"
        );
        let ok = settings(&[("VCAP_APPLICATION", app), ("SESSION_STORE", "memory")]).unwrap();
        assert!(matches!(ok.store, StoreSettings::Memory { .. }));
    }

    #[test]
    fn a_redis_url_password_never_reaches_an_error() {
        let msg = error(&[("REDIS_URL", "http://:sup3rsecret@h")]);
        assert!(!msg.contains("sup3rsecret"), "{msg}");
        let msg = error(&[("SESSION_SECRET", "tooshortsecret")]);
        assert!(!msg.contains("tooshortsecret"), "{msg}");
    }

    #[test]
    fn lower_case_names_are_ignored_rather_than_colliding() {
        let s = settings(&[("PORT", "9000"), ("port", "1"), ("redis_url", "redis://h")]).unwrap();
        assert_eq!(s.http.port, 9000);
        assert!(matches!(s.store, StoreSettings::Memory { .. }));
    }

    #[test]
    fn blank_values_count_as_unset() {
        let s = settings(&[("PORT", " "), ("VCAP_APPLICATION", "")]).unwrap();
        assert_eq!(s.http.port, 8080);
        assert!(!s.platform.on_cloud_foundry);
    }

    #[test]
    #[ignore = "fuzzing; run by ci/fuzz.sh"]
    fn fuzz_settings() {
        let names = prop::sample::select(VARIABLES.clone());
        let value = prop_oneof![
            ".{0,60}",
            "[0-9-]{1,8}",
            "(redis|rediss|http)://[a-z0-9:@%./]{0,30}",
            super::vcap::tests::arb_json().prop_map(|v| v.to_string()),
        ];
        let vars = prop::collection::vec((names, value), 0..10);
        crate::fuzz::fuzz_for("settings", vars, |vars| {
            let vars = vars.iter().map(|(k, v)| (k.to_string(), v.clone()));
            if let Err(e) = Settings::from_vars(vars) {
                let line = e.to_string();
                assert!(!line.contains('\n'), "a multi-line error: {line:?}");
            }
        });
    }

    proptest! {
        #[test]
        fn arbitrary_values_never_panic(
            vars in prop::collection::vec(
                (prop::sample::select(VARIABLES.clone()), ".{0,40}"),
                0..8,
            )
        ) {
            let _ = Settings::from_vars(vars);
        }
    }
}
