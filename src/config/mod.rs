//! Typed settings, read once from the environment and validated before anything starts.
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `PORT` | `8080` | listen on `0.0.0.0:PORT` |
//! | `VCAP_APPLICATION` | unset | JSON; when set we are on Cloud Foundry |
//! | `VCAP_SERVICES` | unset | JSON of the bound services, searched for a Redis |
//! | `CF_INSTANCE_INDEX` | `0` (or `instance_index` from `VCAP_APPLICATION`) | this instance's index |
//! | `CF_INSTANCE_GUID` | unset | this instance's GUID, for logs |
//! | `REDIS_URL` | unset | explicit `redis://` or `rediss://` URL; wins over `VCAP_SERVICES` |
//! | `REDIS_SERVICE_NAME` | unset | the binding to use, by `name` or `instance_name` |
//! | `SESSION_STORE` | `auto` | `auto`, `redis` or `memory` |
//! | `SESSION_SECRET` | unset | comma-separated secrets of 32+ bytes; the first signs, all verify |
//! | `SESSION_TTL_SECONDS` | `1800` | sliding session lifetime |
//! | `SESSION_COOKIE_NAME` | `sid` | never `JSESSIONID`, which the CF router makes sticky |
//! | `SESSION_KEY_PREFIX` | `sess` | prefix of the Redis keys |
//! | `COOKIE_SECURE` | `auto` | `auto`, `true` or `false` |
//! | `REDIS_POOL_SIZE` | `8` | Redis connections per process |
//! | `REDIS_TIMEOUT_MS` | `500` | deadline for any Redis work in a request |
//! | `MEMORY_STORE_MAX_SESSIONS` | `100000` | bound of the embedded store |
//! | `HTTP_WORKERS` | `2` | HTTP worker threads |
//! | `SHUTDOWN_TIMEOUT_SECONDS` | `8` | grace period after SIGTERM |
//! | `LOG_FORMAT` | `json` on CF, else `text` | log line format |
//! | `RUST_LOG` | `info` | log filter |

mod redis;
mod vcap;

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

pub use self::redis::{RedisEndpoint, RedisUrlError};
pub use self::vcap::{RedisBinding, VcapError, find_redis_binding};

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

/// HTTP server settings.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// TCP port on 0.0.0.0; 0 picks a free one.
    pub port: u16,
    /// Worker threads.
    pub workers: usize,
    /// Grace period for in-flight requests after SIGTERM.
    pub shutdown_timeout: Duration,
}

/// Facts about the platform this instance runs on.
#[derive(Clone, Debug)]
pub struct Platform {
    /// Whether `VCAP_APPLICATION` is set.
    pub on_cloud_foundry: bool,
    /// Index of this instance among the app's instances.
    pub instance_index: u32,
    /// Platform GUID of this instance.
    pub instance_guid: Option<String>,
    /// Application name from `VCAP_APPLICATION`.
    pub app_name: Option<String>,
}

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
    /// The server.
    pub endpoint: RedisEndpoint,
    /// Where the endpoint came from, for the start-up log.
    pub source: RedisSource,
    /// Maximum pooled connections.
    pub pool_size: usize,
    /// Deadline for Redis work in one request: pool wait, connect and command.
    pub timeout: Duration,
}

/// Where the Redis endpoint was configured.
#[derive(Clone, Debug)]
pub enum RedisSource {
    /// `REDIS_URL`.
    Url,
    /// A `VCAP_SERVICES` binding.
    Binding {
        /// Binding name.
        name: String,
        /// Service label.
        label: String,
    },
}

/// Session and cookie behaviour.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    /// Signing secrets; the first signs, all verify. Empty means "generate one".
    pub secrets: Vec<SecretString>,
    /// Sliding lifetime of a session.
    pub ttl: Duration,
    /// Name of the session cookie.
    pub cookie_name: String,
    /// When to mark the cookie `Secure`.
    pub cookie_secure: CookieSecure,
    /// Prefix of Redis keys.
    pub key_prefix: String,
}

/// When the session cookie carries the `Secure` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CookieSecure {
    /// Always.
    Always,
    /// Never (plain-HTTP development).
    Never,
    /// On Cloud Foundry, or when the request came in over HTTPS per `X-Forwarded-Proto`.
    Auto,
}

/// Log output settings.
#[derive(Clone, Debug)]
pub struct LogSettings {
    /// Line format.
    pub format: LogFormat,
    /// `RUST_LOG`-style filter directives.
    pub filter: String,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for the platform's log aggregation.
    Json,
    /// Human-readable lines.
    Text,
}

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

/// Shortest accepted signing secret: HMAC-SHA256 wants at least its output size in key.
pub const MIN_SECRET_BYTES: usize = 32;

/// Every variable read, by its exact name.
const VARIABLES: &[&str] = &[
    "PORT",
    "VCAP_APPLICATION",
    "VCAP_SERVICES",
    "CF_INSTANCE_INDEX",
    "CF_INSTANCE_GUID",
    "REDIS_URL",
    "REDIS_SERVICE_NAME",
    "SESSION_STORE",
    "SESSION_SECRET",
    "SESSION_TTL_SECONDS",
    "SESSION_COOKIE_NAME",
    "SESSION_KEY_PREFIX",
    "COOKIE_SECURE",
    "REDIS_POOL_SIZE",
    "REDIS_TIMEOUT_MS",
    "MEMORY_STORE_MAX_SESSIONS",
    "HTTP_WORKERS",
    "SHUTDOWN_TIMEOUT_SECONDS",
    "LOG_FORMAT",
    "RUST_LOG",
];

/// The raw environment, every value a string so that errors can name the variable.
#[derive(Deserialize, Default)]
struct RawEnv {
    port: Option<String>,
    vcap_application: Option<String>,
    vcap_services: Option<String>,
    cf_instance_index: Option<String>,
    cf_instance_guid: Option<String>,
    redis_url: Option<String>,
    redis_service_name: Option<String>,
    session_store: Option<String>,
    session_secret: Option<String>,
    session_ttl_seconds: Option<String>,
    session_cookie_name: Option<String>,
    session_key_prefix: Option<String>,
    cookie_secure: Option<String>,
    redis_pool_size: Option<String>,
    redis_timeout_ms: Option<String>,
    memory_store_max_sessions: Option<String>,
    http_workers: Option<String>,
    shutdown_timeout_seconds: Option<String>,
    log_format: Option<String>,
    rust_log: Option<String>,
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
        // Only the exact upper-case names count: envy lower-cases names, so `port` next to
        // `PORT` would otherwise collide. Blank values are treated as unset: platforms and
        // shells produce them freely.
        let vars = vars
            .into_iter()
            .filter(|(k, v)| VARIABLES.contains(&k.as_str()) && !v.trim().is_empty());
        let raw: RawEnv =
            envy::from_iter(vars).map_err(|e| ConfigError::Environment(e.to_string()))?;
        raw.validate()
    }
}

fn parse_num<T: std::str::FromStr + PartialOrd>(
    value: Option<&str>,
    var: &'static str,
    expected: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    match text.trim().parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(ConfigError::Invalid {
            var,
            expected,
            got: text.to_owned(),
        }),
    }
}

/// RFC 6265 cookie-name characters (an RFC 7230 token).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl RawEnv {
    fn validate(self) -> Result<Settings, ConfigError> {
        let http = HttpSettings {
            port: parse_num(
                self.port.as_deref(),
                "PORT",
                "a port number between 0 and 65535",
                8080,
                0..=65535,
            )?,
            workers: parse_num(
                self.http_workers.as_deref(),
                "HTTP_WORKERS",
                "a number of threads between 1 and 64",
                2,
                1..=64,
            )?,
            shutdown_timeout: Duration::from_secs(parse_num(
                self.shutdown_timeout_seconds.as_deref(),
                "SHUTDOWN_TIMEOUT_SECONDS",
                "a number of seconds between 0 and 3600",
                8,
                0..=3600,
            )?),
        };

        let app: Option<serde_json::Value> = self
            .vcap_application
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(ConfigError::VcapApplication)?;
        let on_cloud_foundry = app.is_some();
        let app_field = |k: &str| app.as_ref().and_then(|a| a.get(k));
        let instance_index = match self.cf_instance_index.as_deref() {
            Some(_) => parse_num(
                self.cf_instance_index.as_deref(),
                "CF_INSTANCE_INDEX",
                "a non-negative instance number",
                0,
                0..=u32::MAX,
            )?,
            None => app_field("instance_index")
                .and_then(serde_json::Value::as_u64)
                .and_then(|i| u32::try_from(i).ok())
                .unwrap_or(0),
        };
        let platform = Platform {
            on_cloud_foundry,
            instance_index,
            instance_guid: self.cf_instance_guid.clone().or_else(|| {
                app_field("instance_id")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            }),
            app_name: app_field("application_name")
                .or_else(|| app_field("name"))
                .and_then(|v| v.as_str())
                .map(str::to_owned),
        };

        let session = self.session_settings()?;
        let store = self.store_settings(on_cloud_foundry)?;

        let format = match self.log_format.as_deref().map(str::trim) {
            None if on_cloud_foundry => LogFormat::Json,
            None => LogFormat::Text,
            Some(f) if f.eq_ignore_ascii_case("json") => LogFormat::Json,
            Some(f) if f.eq_ignore_ascii_case("text") => LogFormat::Text,
            Some(f) => {
                return Err(ConfigError::Invalid {
                    var: "LOG_FORMAT",
                    expected: "json or text",
                    got: f.to_owned(),
                });
            }
        };
        let filter = self.rust_log.clone().unwrap_or_else(|| "info".to_owned());
        // ASCII first: tracing-subscriber 0.3.23's directive parser panics on some non-ASCII
        // input (it slices inside a character), which ci/fuzz.sh found. Targets, levels and
        // field names are ASCII anyway.
        if !filter.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            || tracing_subscriber::EnvFilter::builder()
                .parse(&filter)
                .is_err()
        {
            return Err(ConfigError::Invalid {
                var: "RUST_LOG",
                expected: "an ASCII log filter such as info or redis_sessions=debug,info",
                got: filter,
            });
        }

        Ok(Settings {
            http,
            platform,
            store,
            session,
            log: LogSettings { format, filter },
        })
    }

    fn session_settings(&self) -> Result<SessionSettings, ConfigError> {
        let mut secrets = Vec::new();
        if let Some(all) = self.session_secret.as_deref() {
            for (i, part) in all.split(',').enumerate() {
                let part = part.trim();
                if part.len() < MIN_SECRET_BYTES {
                    return Err(ConfigError::ShortSecret {
                        index: i + 1,
                        len: part.len(),
                    });
                }
                secrets.push(SecretString::from(part.to_owned()));
            }
        }
        let cookie_name = self.session_cookie_name.as_deref().unwrap_or("sid").trim();
        // The Cloud Foundry router pins a client to one instance when it sees JSESSIONID
        // (and uses __VCAP_ID__ for that pinning): either would hide the very behaviour this
        // service exists to show. See the gorouter docs on session affinity.
        if !is_token(cookie_name)
            || cookie_name.eq_ignore_ascii_case("JSESSIONID")
            || cookie_name.eq_ignore_ascii_case("__VCAP_ID__")
        {
            return Err(ConfigError::Invalid {
                var: "SESSION_COOKIE_NAME",
                expected: "a cookie name made of letters, digits and !#$%&'*+-.^_`|~, other than JSESSIONID or __VCAP_ID__ (which make Cloud Foundry routing sticky)",
                got: cookie_name.to_owned(),
            });
        }
        let key_prefix = self.session_key_prefix.as_deref().unwrap_or("sess").trim();
        if key_prefix.len() > 64
            || !key_prefix
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'?')
        {
            return Err(ConfigError::Invalid {
                var: "SESSION_KEY_PREFIX",
                expected: "up to 64 printable characters without spaces, * or ?",
                got: key_prefix.to_owned(),
            });
        }
        let cookie_secure = match self.cookie_secure.as_deref().map(str::trim) {
            None => CookieSecure::Auto,
            Some(v) if v.eq_ignore_ascii_case("auto") => CookieSecure::Auto,
            Some(v) if v.eq_ignore_ascii_case("true") => CookieSecure::Always,
            Some(v) if v.eq_ignore_ascii_case("false") => CookieSecure::Never,
            Some(v) => {
                return Err(ConfigError::Invalid {
                    var: "COOKIE_SECURE",
                    expected: "auto, true or false",
                    got: v.to_owned(),
                });
            }
        };
        Ok(SessionSettings {
            secrets,
            ttl: Duration::from_secs(parse_num(
                self.session_ttl_seconds.as_deref(),
                "SESSION_TTL_SECONDS",
                "a number of seconds between 1 and 31536000 (one year)",
                1800,
                1..=31_536_000,
            )?),
            cookie_name: cookie_name.to_owned(),
            cookie_secure,
            key_prefix: key_prefix.to_owned(),
        })
    }

    fn store_settings(&self, on_cloud_foundry: bool) -> Result<StoreSettings, ConfigError> {
        #[derive(PartialEq)]
        enum Choice {
            Auto,
            Redis,
            Memory,
        }
        let choice = match self.session_store.as_deref().map(str::trim) {
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
            self.redis_pool_size.as_deref(),
            "REDIS_POOL_SIZE",
            "a number of connections between 1 and 256",
            8,
            1..=256,
        )?;
        let timeout = Duration::from_millis(parse_num(
            self.redis_timeout_ms.as_deref(),
            "REDIS_TIMEOUT_MS",
            "a number of milliseconds between 1 and 60000",
            500,
            1..=60_000,
        )?);
        let max_sessions = parse_num(
            self.memory_store_max_sessions.as_deref(),
            "MEMORY_STORE_MAX_SESSIONS",
            "a number of sessions between 1 and 100000000",
            100_000,
            1..=100_000_000,
        )?;

        // Both documents are validated even when unused, so a broken binding is never a surprise later.
        let url = self
            .redis_url
            .as_deref()
            .map(|u| RedisEndpoint::from_url(u).map_err(ConfigError::RedisUrl))
            .transpose()?;
        if let Some(services) = self.vcap_services.as_deref() {
            serde_json::from_str::<serde_json::Value>(services)
                .map_err(|e| ConfigError::Vcap(VcapError::InvalidJson(e)))?;
        }
        if choice == Choice::Memory {
            return Ok(StoreSettings::Memory { max_sessions });
        }
        let found = match url {
            Some(endpoint) => Some((endpoint, RedisSource::Url)),
            None => match self.vcap_services.as_deref() {
                Some(services) => find_redis_binding(services, self.redis_service_name.as_deref())?
                    .map(|b| {
                        let source = RedisSource::Binding {
                            name: b.name,
                            label: b.label,
                        };
                        (b.endpoint, source)
                    }),
                None if self.redis_service_name.is_some() => {
                    return Err(ConfigError::Vcap(VcapError::NoSuchService {
                        wanted: self.redis_service_name.clone().unwrap_or_default(),
                        available: vec![],
                    }));
                }
                None => None,
            },
        };
        match found {
            Some((endpoint, source)) => Ok(StoreSettings::Redis(RedisSettings {
                endpoint,
                source,
                pool_size,
                timeout,
            })),
            None if choice == Choice::Redis => Err(ConfigError::RedisRequired),
            None if on_cloud_foundry => Err(ConfigError::NoRedisOnCloudFoundry),
            None => Ok(StoreSettings::Memory { max_sessions }),
        }
    }
}

#[cfg(test)]
mod tests {
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
        let app = include_str!("../../../shared/fixtures/vcap/vcap-application.json");
        let services = include_str!("../../../shared/fixtures/vcap/p.redis-on-demand-tls.json");
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
        let services = include_str!("../../../shared/fixtures/vcap/ambiguous-two-p-redis.json");
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
    fn each_bad_value_is_one_line_naming_its_variable() {
        let app = include_str!("../../../shared/fixtures/vcap/vcap-application.json");
        let two = include_str!("../../../shared/fixtures/vcap/ambiguous-two-p-redis.json");
        let short = format!("{SECRET},short");
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("PORT", "eighty")], "PORT must be a port number"),
            (&[("PORT", "70000")], "PORT must be a port number"),
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
        let app = include_str!("../../../shared/fixtures/vcap/vcap-application.json");
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
        let names = prop::sample::select(VARIABLES);
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
                (prop::sample::select(VARIABLES), ".{0,40}"),
                0..8,
            )
        ) {
            let _ = Settings::from_vars(vars.into_iter().map(|(k, v)| (k.to_owned(), v)));
        }
    }
}
