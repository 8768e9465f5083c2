//! Finding the bound Redis in `VCAP_SERVICES`, whatever broker made the binding.
//!
//! Brokers disagree on the credential shape (see `tests/fixtures/vcap/README.md` for the
//! sources): `host` or `hostname`; ports as numbers or strings; `tls_port`/`sslPort` for TLS;
//! `password` or Azure's `primaryKey`; and sometimes only a `uri`/`url`. The rules below take
//! explicit fields first and let the URI fill only what they lack.

use secrecy::SecretString;
use serde_json::{Map, Value};

use super::redis::{DEFAULT_REDIS_PORT, RedisEndpoint, UrlParts, parse_url_parts, scheme_tls};
use super::topology::{DEFAULT_SENTINEL_PORT, NodeAddress, RedisTopology, SentinelSettings};

/// A Redis service binding found in `VCAP_SERVICES`.
#[derive(Clone, Debug)]
pub struct RedisBinding {
    /// The binding's `name` (what `cf bind-service` was given).
    pub name: String,
    /// The service offering's `label`, such as `p.redis`.
    pub label: String,
    /// Where to connect (with Sentinels: the data nodes' credentials only).
    pub endpoint: RedisEndpoint,
    /// Sentinel or Cluster when the credentials say so; `None` leaves it to `REDIS_MODE`.
    pub topology: Option<RedisTopology>,
}

/// Why no usable Redis binding could be taken from `VCAP_SERVICES`.
#[derive(Debug, thiserror::Error)]
pub enum VcapError {
    /// The text is not JSON.
    #[error("VCAP_SERVICES is not valid JSON: {0}")]
    InvalidJson(#[source] serde_json::Error),
    /// The JSON is not an object of service arrays.
    #[error("VCAP_SERVICES must be a JSON object mapping service labels to arrays of bindings")]
    NotAnObject,
    /// More than one binding looks like Redis.
    #[error(
        "VCAP_SERVICES has {} Redis bindings ({}); set REDIS_SERVICE_NAME to the one to use",
        .0.len(),
        quoted_list(.0)
    )]
    Ambiguous(Vec<String>),
    /// `REDIS_SERVICE_NAME` names no binding.
    #[error(
        "REDIS_SERVICE_NAME={wanted:?} matches no binding's name or instance_name in VCAP_SERVICES (bound: {})",
        if available.is_empty() { "none".to_owned() } else { quoted_list(available) }
    )]
    NoSuchService {
        /// The requested name.
        wanted: String,
        /// Every binding name present.
        available: Vec<String>,
    },
    /// The chosen binding's credentials cannot be turned into a connection.
    #[error("VCAP_SERVICES binding {name:?} has unusable credentials: {reason}")]
    BadCredentials {
        /// The binding's name.
        name: String,
        /// What is wrong, never including a secret.
        reason: String,
    },
}

fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Picks the Redis binding out of a `VCAP_SERVICES` document.
///
/// Returns `Ok(None)` when no binding looks like Redis and no `service_name` was asked for.
pub fn find_redis_binding(
    vcap_services: &str,
    service_name: Option<&str>,
) -> Result<Option<RedisBinding>, VcapError> {
    let doc: Value = serde_json::from_str(vcap_services).map_err(VcapError::InvalidJson)?;
    find_redis_binding_in(&doc, service_name)
}

/// [`find_redis_binding`] over a document already parsed, so the settings parse it once.
pub fn find_redis_binding_in(
    doc: &Value,
    service_name: Option<&str>,
) -> Result<Option<RedisBinding>, VcapError> {
    let services = doc.as_object().ok_or(VcapError::NotAnObject)?;
    let bindings: Vec<Binding<'_>> = services
        .iter()
        .filter_map(|(label, list)| Some((label, list.as_array()?)))
        .flat_map(|(label, list)| {
            list.iter()
                .filter_map(Value::as_object)
                .map(move |b| Binding::new(label, b))
        })
        .collect();

    let chosen = match service_name {
        Some(wanted) => {
            let found = bindings
                .iter()
                .find(|b| b.name == wanted || b.instance_name == Some(wanted));
            match found {
                Some(b) => b,
                None => {
                    return Err(VcapError::NoSuchService {
                        wanted: wanted.to_owned(),
                        available: bindings.iter().map(|b| b.name.to_owned()).collect(),
                    });
                }
            }
        }
        None => {
            // A binding without credentials (the metric registrar's drain service, say, which
            // is named after the app and so may contain "redis") cannot be the store.
            let candidates: Vec<&Binding<'_>> = bindings
                .iter()
                .filter(|b| b.has_credentials() && b.looks_like_redis())
                .collect();
            match candidates.as_slice() {
                [] => return Ok(None),
                [one] => return one.to_redis_binding().map(Some),
                many => {
                    return Err(VcapError::Ambiguous(
                        many.iter().map(|b| b.name.to_owned()).collect(),
                    ));
                }
            }
        }
    };
    chosen.to_redis_binding().map(Some)
}

/// Who to authenticate as, as [`Binding::credentials`] decided.
struct Credentials {
    username: Option<String>,
    tentative_username: Option<String>,
    password: Option<SecretString>,
}

/// One entry of a service array, read leniently: brokers omit and retype fields freely.
struct Binding<'a> {
    label: &'a str,
    name: &'a str,
    instance_name: Option<&'a str>,
    tags: Vec<&'a str>,
    credentials: Option<&'a Map<String, Value>>,
}

impl<'a> Binding<'a> {
    fn new(service_key: &'a str, b: &'a Map<String, Value>) -> Self {
        let text = |k: &str| b.get(k).and_then(Value::as_str);
        let label = text("label").unwrap_or(service_key);
        Binding {
            label,
            name: text("name").or(text("instance_name")).unwrap_or(label),
            instance_name: text("instance_name"),
            tags: b
                .get("tags")
                .and_then(Value::as_array)
                .map(|t| t.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default(),
            credentials: b.get("credentials").and_then(Value::as_object),
        }
    }

    fn has_credentials(&self) -> bool {
        self.credentials.is_some_and(|c| !c.is_empty())
    }

    fn looks_like_redis(&self) -> bool {
        // Valkey is the Linux Foundation's fork of Redis; Tanzu's Valkey tile says only that.
        let contains_redis = |s: &str| {
            let s = s.to_ascii_lowercase();
            s.contains("redis") || s.contains("valkey")
        };
        self.tags
            .iter()
            .any(|t| t.eq_ignore_ascii_case("redis") || t.eq_ignore_ascii_case("valkey"))
            || contains_redis(self.label)
            || contains_redis(self.name)
            || ["uri", "url"].iter().any(|k| {
                self.cred_str(k)
                    .and_then(|u| u.split_once("://"))
                    .is_some_and(|(scheme, _)| scheme_tls(scheme).is_some())
            })
    }

    fn cred(&self, key: &str) -> Option<&'a Value> {
        self.credentials?.get(key).filter(|v| !v.is_null())
    }

    fn cred_str(&self, key: &str) -> Option<&'a str> {
        self.cred(key)?.as_str().filter(|s| !s.is_empty())
    }

    /// A string in a nested credentials object, as a9s nests `redis` and `sentinel`.
    fn nested_str(&self, object: &str, key: &str) -> Option<&'a str> {
        self.cred(object)?
            .get(key)?
            .as_str()
            .filter(|s| !s.is_empty())
    }

    /// A port number, as a number or a string, at `value`; `what` names it in errors.
    fn port_value(&self, value: Option<&Value>, what: &str) -> Result<Option<u16>, VcapError> {
        let port = match value {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
            Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
            Some(_) => None,
        };
        // try_from refuses what does not fit in a port instead of wrapping it around.
        match port.and_then(|p| u16::try_from(p).ok()) {
            Some(p @ 1..) => Ok(Some(p)),
            _ => Err(self.bad(format!("{what} is not a port number between 1 and 65535"))),
        }
    }

    /// The Sentinels, if the credentials list any: Tanzu's `sentinels` array of
    /// `{host, port, tls_port}`, or a9s's `hosts` with a nested `sentinel` object (older a9s
    /// versions: flat `sentinel_master_name` and `sentinel_port`).
    fn sentinels(&self) -> Result<Option<SentinelSettings>, VcapError> {
        if let Some(list) = self.cred("sentinels").and_then(Value::as_array) {
            let mut sentinels = Vec::new();
            let mut tls = false;
            for s in list {
                let Some(host) = s
                    .get("host")
                    .and_then(Value::as_str)
                    .filter(|h| !h.is_empty())
                else {
                    return Err(self.bad("a sentinels entry has no host"));
                };
                let tls_port = self.port_value(s.get("tls_port"), "sentinels[].tls_port")?;
                let port = self.port_value(s.get("port"), "sentinels[].port")?;
                tls |= tls_port.is_some();
                sentinels.push(NodeAddress {
                    host: host.to_owned(),
                    port: tls_port.or(port).unwrap_or(DEFAULT_SENTINEL_PORT),
                });
            }
            let master = self
                .cred_str("master_name")
                .ok_or_else(|| self.bad("sentinels are listed but master_name is missing"))?;
            return Ok(Some(SentinelSettings {
                sentinels,
                master: master.to_owned(),
                password: self
                    .cred_str("sentinel_password")
                    .map(|p| SecretString::from(p.to_owned())),
                username: self.cred_str("sentinel_username").map(str::to_owned),
                tls,
            }))
            .and_then(|s| match s {
                Some(s) if s.sentinels.is_empty() => Err(self.bad("sentinels is empty")),
                other => Ok(other),
            });
        }
        let master = self
            .nested_str("sentinel", "master_name")
            .or_else(|| self.cred_str("sentinel_master_name"));
        let Some(master) = master else {
            return Ok(None);
        };
        let port = match self.port_value(
            self.cred("sentinel").and_then(|s| s.get("port")),
            "sentinel.port",
        )? {
            Some(p) => p,
            None => self.port("sentinel_port")?.unwrap_or(DEFAULT_SENTINEL_PORT),
        };
        let hosts: Vec<&str> = self
            .cred("hosts")
            .and_then(Value::as_array)
            .map(|h| h.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if hosts.is_empty() {
            return Err(self.bad("a sentinel master is named but hosts lists no Sentinel"));
        }
        Ok(Some(SentinelSettings {
            sentinels: hosts
                .iter()
                .map(|h| NodeAddress {
                    host: (*h).to_owned(),
                    port,
                })
                .collect(),
            master: master.to_owned(),
            password: self
                .nested_str("sentinel", "password")
                .map(|p| SecretString::from(p.to_owned())),
            username: self.nested_str("sentinel", "username").map(str::to_owned),
            tls: false,
        }))
    }

    fn uri(&self) -> Option<&'a str> {
        self.cred_str("uri").or_else(|| self.cred_str("url"))
    }

    fn bad(&self, reason: impl Into<String>) -> VcapError {
        VcapError::BadCredentials {
            name: self.name.to_owned(),
            reason: reason.into(),
        }
    }

    fn port(&self, key: &str) -> Result<Option<u16>, VcapError> {
        self.port_value(self.cred(key), key)
    }

    fn flag(&self, key: &str) -> bool {
        match self.cred(key) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        }
    }

    /// Who to authenticate as. Fields win, as everywhere; the URI's user name is special.
    ///
    /// Brokers that send an explicit `password` (or `primaryKey`) beside a `uri` put a
    /// placeholder user name in the URI, because a URI needs something there: GOV.UK PaaS's
    /// ElastiCache broker writes `rediss://x:PASSWORD@…`, SAP BTP's `redis-cache` writes
    /// `rediss://no-user-name-for-redis:PASSWORD@…`. Their servers know only the default user,
    /// and `AUTH x PASSWORD` fails with WRONGPASS. So in that shape the URI's user name is
    /// only tentative: the connection authenticates with the password alone and tries the
    /// user name only if Redis refuses that. A `username`/`user` field, or a URI that is the
    /// only source of credentials, names a real ACL user and is used as given.
    fn credentials(&self, parts: &UrlParts) -> Credentials {
        // a9s nests the data node's credentials in a `redis` object beside `sentinel`.
        let username_field = self
            .cred_str("username")
            .or_else(|| self.cred_str("user"))
            .or_else(|| self.nested_str("redis", "username"))
            .map(str::to_owned);
        let password_field = self
            .cred_str("password")
            .or_else(|| self.cred_str("primaryKey"))
            .or_else(|| self.nested_str("redis", "password"))
            .map(|p| SecretString::from(p.to_owned()));
        match (username_field, password_field) {
            (Some(username), password) => Credentials {
                username: Some(username),
                tentative_username: None,
                password: password.or_else(|| parts.password.clone()),
            },
            (None, Some(password)) => Credentials {
                username: None,
                tentative_username: parts.username.clone(),
                password: Some(password),
            },
            (None, None) => Credentials {
                username: parts.username.clone(),
                tentative_username: None,
                password: parts.password.clone(),
            },
        }
    }

    fn to_redis_binding(&self) -> Result<RedisBinding, VcapError> {
        if self.credentials.is_none() {
            return Err(self.bad("there is no credentials object"));
        }
        // The URI only matters when a field is missing, so a malformed one is an error only then.
        let uri = self.uri().map(parse_url_parts);
        let sentinels = self.sentinels()?;
        // Tanzu's Sentinel shape names no data host at all: the Sentinels tell it.
        let host_field = self
            .cred_str("host")
            .or_else(|| self.cred_str("hostname"))
            .or_else(|| {
                let first = sentinels.as_ref()?.sentinels.first()?;
                (self.uri().is_none()).then_some(first.host.as_str())
            });

        let endpoint = match host_field {
            None => {
                let parts = match uri {
                    Some(Ok(parts)) => parts,
                    Some(Err(e)) => return Err(self.bad(format!("uri is unusable: {e}"))),
                    None => return Err(self.bad("it has neither host, hostname nor uri")),
                };
                let credentials = self.credentials(&parts);
                RedisEndpoint {
                    host: parts.host.ok_or_else(|| self.bad("uri has no host"))?,
                    port: parts.port.unwrap_or(DEFAULT_REDIS_PORT),
                    tls: parts.tls,
                    username: credentials.username,
                    tentative_username: credentials.tentative_username,
                    password: credentials.password,
                    db: parts.db.unwrap_or(0),
                }
            }
            Some(host) => {
                let parts = uri.and_then(Result::ok).unwrap_or_default();
                let tls_port = match self.port("tls_port")? {
                    Some(p) => Some(p),
                    None => self.port("sslPort")?,
                };
                let (port, tls_from_port) = match tls_port {
                    Some(p) => (p, true),
                    None => (
                        match self.port("port")? {
                            Some(p) => Some(p),
                            None => self.port_value(
                                self.cred("redis").and_then(|r| r.get("port")),
                                "redis.port",
                            )?,
                        }
                        .or(parts.port)
                        .unwrap_or(DEFAULT_REDIS_PORT),
                        false,
                    ),
                };
                let credentials = self.credentials(&parts);
                RedisEndpoint {
                    host: host.trim().to_owned(),
                    port,
                    tls: tls_from_port
                        || self.flag("tls")
                        || self.flag("tls_enabled")
                        || self.flag("ssl")
                        || parts.tls,
                    username: credentials.username,
                    tentative_username: credentials.tentative_username,
                    password: credentials.password,
                    db: parts.db.unwrap_or(0),
                }
            }
        };
        let topology = match sentinels {
            Some(s) => Some(RedisTopology::Sentinel(Box::new(s))),
            // SAP BTP's shape says so outright; others (ElastiCache, Azure) are found by asking
            // the server at connect, in `auto` mode.
            None if self.flag("cluster_mode") => Some(RedisTopology::Cluster {
                nodes: vec![NodeAddress {
                    host: endpoint.host.clone(),
                    port: endpoint.port,
                }],
            }),
            None => None,
        };
        Ok(RedisBinding {
            name: self.name.to_owned(),
            label: self.label.to_owned(),
            endpoint,
            topology,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use secrecy::ExposeSecret;

    /// A `VCAP_*` fixture by file name. Every test loads fixtures this way, at run time from
    /// one directory, so the coverage test below sees the same files the others read.
    pub(crate) fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/vcap/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    fn only(name: &str) -> RedisBinding {
        find_redis_binding(&fixture(name), None)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: no binding found"))
    }

    /// What one fixture with a single Redis binding must yield.
    struct Expected {
        file: &'static str,
        name: &'static str,
        label: &'static str,
        host: &'static str,
        port: u16,
        tls: bool,
        password: Option<&'static str>,
    }

    const SINGLE_BINDING_FIXTURES: &[Expected] = &[
        Expected {
            file: "p-redis-shared-vm.json",
            name: "my-redis",
            label: "p-redis",
            host: "10.0.4.17",
            port: 34029,
            tls: false,
            password: Some("fake-shared-vm-password"),
        },
        Expected {
            file: "p-redis-dedicated-vm.json",
            name: "my-redis",
            label: "p-redis",
            host: "10.0.8.21",
            port: 6379,
            tls: false,
            password: Some("fake-dedicated-vm-password"),
        },
        Expected {
            file: "p.redis-on-demand-tls.json",
            name: "redis-sessions",
            label: "p.redis",
            host: "q-s0.redis-instance.services.service-instance-8e8fb07f-9c0b-4313-8748-0cf61f0ee989.bosh",
            port: 16379,
            tls: true,
            password: Some("fake-on-demand-password"),
        },
        Expected {
            file: "p.redis-on-demand-no-tls.json",
            name: "redis-sessions",
            label: "p.redis",
            host: "q-s0.redis-instance.svc-dmd.service-instance-8e8fb07f-9c0b-4313-8748-0cf61f0ee989.bosh",
            port: 6379,
            tls: false,
            password: Some("fake-redispassword"),
        },
        Expected {
            file: "rediscloud.json",
            name: "hello-redis",
            label: "rediscloud",
            host: "redis-15459.c98.us-east-1-4.ec2.cloud.example.com",
            port: 15459,
            tls: false,
            password: Some("fake-rediscloud-password"),
        },
        Expected {
            file: "redislabs.json",
            name: "redis-enterprise-service",
            label: "redislabs",
            host: "redis-16917.internal.redis-enterprise-01.example.com",
            port: 16917,
            tls: false,
            password: Some("fake-redislabs-password"),
        },
        Expected {
            file: "azure-rediscache-osba.json",
            name: "my-azure-redis",
            label: "azure-rediscache",
            host: "fake-cache-name.redis.cache.windows.net",
            port: 6380,
            tls: true,
            password: Some("fakeAzureKey+with/slash="),
        },
        Expected {
            file: "csb-azure-redis.json",
            name: "my-csb-azure-redis",
            label: "csb-azure-redis",
            host: "csb-redis-44444444.redis.cache.windows.net",
            port: 6380,
            tls: true,
            password: Some("fake-csb-azure-access-key="),
        },
        Expected {
            file: "csb-google-redis-memorystore.json",
            name: "my-memorystore",
            label: "csb-google-redis",
            host: "10.128.0.5",
            port: 6379,
            tls: false,
            password: None,
        },
        Expected {
            file: "user-provided-uri.json",
            name: "my-external-redis",
            label: "user-provided",
            host: "redis.example.com",
            port: 6379,
            tls: false,
            password: Some("fake-ups-password"),
        },
        Expected {
            file: "user-provided-rediss-uri-tagged.json",
            name: "session-store",
            label: "user-provided",
            host: "redis-12345.c1.cloud.example.com",
            port: 12345,
            tls: true,
            password: Some("fake@pass/word"),
        },
        Expected {
            file: "mixed-postgres-and-redis.json",
            name: "sessions",
            label: "p.redis",
            host: "q-s0.redis-instance.services.service-instance-0000.bosh",
            port: 16379,
            tls: true,
            password: Some("fake-password"),
        },
    ];

    #[test]
    fn every_single_binding_fixture_yields_its_redis() {
        for e in SINGLE_BINDING_FIXTURES {
            let Expected {
                file,
                name,
                label,
                host,
                port,
                tls,
                password,
            } = *e;
            let b = only(file);
            assert_eq!(b.name, name, "{file}: name");
            assert_eq!(b.label, label, "{file}: label");
            assert_eq!(b.endpoint.host, host, "{file}: host");
            assert_eq!(b.endpoint.port, port, "{file}: port");
            assert_eq!(b.endpoint.tls, tls, "{file}: tls");
            assert_eq!(
                b.endpoint.password.as_ref().map(|p| p.expose_secret()),
                password,
                "{file}: password"
            );
        }
    }

    #[test]
    fn every_fixture_file_is_covered_by_a_test() {
        let dir = format!("{}/tests/fixtures/vcap", env!("CARGO_MANIFEST_DIR"));
        let covered: Vec<&str> = SINGLE_BINDING_FIXTURES
            .iter()
            .map(|f| f.file)
            .chain(["ambiguous-two-p-redis.json", "vcap-application.json"])
            .chain(TOPOLOGY_FIXTURES.iter().copied())
            .collect();
        for entry in std::fs::read_dir(&dir).expect("fixture directory") {
            let file = entry.unwrap().file_name().into_string().unwrap();
            if file.ends_with(".json") {
                assert!(
                    covered.contains(&file.as_str()),
                    "fixture {file} has no test"
                );
            }
        }
    }

    #[test]
    fn two_redis_bindings_without_a_service_name_name_every_candidate() {
        let err = find_redis_binding(&fixture("ambiguous-two-p-redis.json"), None).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, VcapError::Ambiguous(ref n) if n.len() == 2),
            "{msg}"
        );
        assert!(
            msg.contains("\"redis\"") && msg.contains("\"another-redis\""),
            "{msg}"
        );
        assert!(msg.contains("REDIS_SERVICE_NAME"), "{msg}");
    }

    #[test]
    fn a_service_name_picks_one_of_several_bindings() {
        let b = find_redis_binding(
            &fixture("ambiguous-two-p-redis.json"),
            Some("another-redis"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(b.endpoint.host, "another-host.example.com");
    }

    #[test]
    fn a_service_name_also_matches_instance_name() {
        let vcap = r#"{"x":[{"name":"binding-a","instance_name":"inst-a","credentials":{"host":"h","port":1}}]}"#;
        let b = find_redis_binding(vcap, Some("inst-a")).unwrap().unwrap();
        assert_eq!(b.name, "binding-a");
    }

    #[test]
    fn a_service_name_that_matches_nothing_lists_what_is_bound() {
        let err = find_redis_binding(&fixture("mixed-postgres-and-redis.json"), Some("nope"))
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("REDIS_SERVICE_NAME=\"nope\""), "{msg}");
        assert!(
            msg.contains("\"sessions\"") && msg.contains("elephantsql-binding-c6c60"),
            "{msg}"
        );
    }

    #[test]
    fn the_application_document_has_no_redis() {
        // VCAP_APPLICATION is an object of scalars: no arrays, so no bindings.
        assert!(
            find_redis_binding(&fixture("vcap-application.json"), None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn only_non_redis_services_means_no_binding() {
        let vcap = r#"{"elephantsql":[{"name":"db","label":"elephantsql","tags":["postgres"],
            "credentials":{"uri":"postgres://u:p@h:5432/d"}}],"empty":[]}"#;
        assert!(find_redis_binding(vcap, None).unwrap().is_none());
        assert!(find_redis_binding("{}", None).unwrap().is_none());
    }

    #[test]
    fn candidates_are_recognised_by_tag_label_name_or_uri_scheme() {
        let cases = [
            (
                r#"{"kv":[{"name":"a","label":"kv","tags":["REDIS"],"credentials":{"host":"h"}}]}"#,
                "tag, any case",
            ),
            (
                r#"{"My-Redis-Svc":[{"name":"a","credentials":{"host":"h"}}]}"#,
                "label from the service key",
            ),
            (
                r#"{"kv":[{"name":"sessions-redis","label":"kv","credentials":{"host":"h"}}]}"#,
                "name",
            ),
            (
                r#"{"kv":[{"name":"a","label":"kv","credentials":{"url":"valkeys://h:1"}}]}"#,
                "valkeys url",
            ),
            (
                r#"{"kv":[{"name":"a","label":"kv","credentials":{"uri":"valkey://h:1"}}]}"#,
                "valkey uri",
            ),
        ];
        for (vcap, why) in cases {
            let found = find_redis_binding(vcap, None).unwrap_or_else(|e| panic!("{why}: {e}"));
            assert!(found.is_some(), "{why}: not recognised");
        }
    }

    #[test]
    fn explicit_fields_win_over_the_uri_which_fills_the_gaps() {
        let vcap = r#"{"user-provided":[{"name":"r","tags":["redis"],"credentials":{
            "host":"field-host","uri":"rediss://user:uri%20pass@uri-host:7000/3"}}]}"#;
        let e = find_redis_binding(vcap, None).unwrap().unwrap().endpoint;
        assert_eq!(e.host, "field-host");
        assert_eq!(
            e.port, 7000,
            "port comes from the uri when no field gives one"
        );
        assert!(e.tls, "rediss scheme means TLS");
        assert_eq!(e.password.unwrap().expose_secret(), "uri pass");
        assert_eq!(e.username.as_deref(), Some("user"));
        assert_eq!(e.db, 3);

        let vcap = r#"{"r":[{"name":"r","credentials":{"host":"h","port":"6390",
            "password":"field","uri":"redis://:uri@other:1"}}]}"#;
        let e = find_redis_binding(vcap, None).unwrap().unwrap().endpoint;
        assert_eq!(
            (e.port, e.password.unwrap().expose_secret()),
            (6390, "field")
        );
    }

    /// GOV.UK PaaS's ElastiCache broker (alphagov/paas-elasticache-broker): host, port,
    /// name, password, uri with the placeholder user `x`, tls_enabled.
    const GOVUK_ELASTICACHE: &str = r#"{"redis":[{"label":"redis","name":"sessions",
        "plan":"tiny-6.x","tags":["elasticache","redis"],"credentials":{
        "host":"master.cf-abc123.xyz.euw2.cache.amazonaws.com","port":6379,"name":"cf-abc123",
        "password":"elasticache-fake-token",
        "uri":"rediss://x:elasticache-fake-token@master.cf-abc123.xyz.euw2.cache.amazonaws.com:6379",
        "tls_enabled":true}}]}"#;

    /// SAP BTP's `redis-cache` (Peripli/service-manager pkg/env/cf_test.go): hostname, port,
    /// password, tls, cluster_mode, uri with the placeholder user `no-user-name-for-redis`.
    const SAP_REDIS_CACHE: &str = r#"{"redis-cache":[{"label":"redis-cache","name":"redis-test",
        "plan":"standard","tags":["cache"],"credentials":{"cluster_mode":false,
        "hostname":"master.rg-fake.iroxbd.euc1.cache.amazonaws.com","password":"fake-sap-pw",
        "port":3283,"tls":true,
        "uri":"rediss://no-user-name-for-redis:fake-sap-pw@master.rg-fake.iroxbd.euc1.cache.amazonaws.com:3283"}}]}"#;

    #[test]
    fn a_placeholder_user_beside_a_password_field_is_only_tentative() {
        for (vcap, placeholder, password) in [
            (GOVUK_ELASTICACHE, "x", "elasticache-fake-token"),
            (SAP_REDIS_CACHE, "no-user-name-for-redis", "fake-sap-pw"),
        ] {
            let e = find_redis_binding(vcap, None).unwrap().unwrap().endpoint;
            assert_eq!(e.username, None, "{placeholder}: the password goes alone");
            assert_eq!(e.tentative_username.as_deref(), Some(placeholder));
            assert_eq!(e.password.unwrap().expose_secret(), password);
            assert!(e.tls, "{placeholder}");
        }
    }

    #[test]
    fn an_explicit_user_field_or_a_uri_alone_names_a_real_acl_user() {
        let cases = [
            (
                r#""host":"h","username":"app","password":"pw","uri":"redis://x:pw@h:1""#,
                Some("app"),
                "a username field wins over the uri",
            ),
            (
                r#""host":"h","user":"app","password":"pw""#,
                Some("app"),
                "user is a synonym",
            ),
            (
                r#""host":"h","username":"app","uri":"redis://x:uri-pw@h:1""#,
                Some("app"),
                "with a username field and no password field, the uri's password is used",
            ),
            (
                r#""uri":"redis://app:pw@h:1""#,
                Some("app"),
                "a uri that is the only source of credentials",
            ),
            (
                r#""host":"h","port":1,"uri":"redis://app:pw@h:1""#,
                Some("app"),
                "a uri that is the only source of credentials, beside a host field",
            ),
        ];
        for (fields, username, why) in cases {
            let vcap = format!(r#"{{"redis":[{{"name":"r","credentials":{{{fields}}}}}]}}"#);
            let e = find_redis_binding(&vcap, None).unwrap().unwrap().endpoint;
            assert_eq!(e.username.as_deref(), username, "{why}");
            assert_eq!(e.tentative_username, None, "{why}");
            assert!(e.password.is_some(), "{why}");
        }
    }

    #[test]
    fn a_password_field_wins_over_the_uri_without_a_host_field_too() {
        let vcap = r#"{"redis":[{"name":"r","credentials":{"password":"field",
            "uri":"rediss://x:uri@h:7000"}}]}"#;
        let e = find_redis_binding(vcap, None).unwrap().unwrap().endpoint;
        assert_eq!(e.password.unwrap().expose_secret(), "field");
        assert_eq!(
            (e.username, e.tentative_username.as_deref()),
            (None, Some("x"))
        );
        assert_eq!((e.host.as_str(), e.port, e.tls), ("h", 7000, true));
    }

    #[test]
    fn tls_is_switched_on_by_a_tls_port_or_a_flag() {
        let cases = [
            (r#""sslPort":6380,"port":6379"#, 6380, true),
            (r#""tls_port":"16379""#, 16379, true),
            (r#""port":6379,"tls":true"#, 6379, true),
            (r#""port":6379,"tls_enabled":"true""#, 6379, true),
            (r#""port":6379,"ssl":true"#, 6379, true),
            (r#""port":6379,"ssl":false"#, 6379, false),
            (r#""port":null"#, 6379, false),
        ];
        for (fields, port, tls) in cases {
            let vcap =
                format!(r#"{{"redis":[{{"name":"r","credentials":{{"host":"h",{fields}}}}}]}}"#);
            let e = find_redis_binding(&vcap, None).unwrap().unwrap().endpoint;
            assert_eq!((e.port, e.tls), (port, tls), "credentials {{{fields}}}");
        }
    }

    #[test]
    fn primary_key_is_the_password_when_there_is_no_password() {
        let vcap = r#"{"azure-rediscache":[{"name":"r","credentials":{"hostName":"x","host":"h","sslPort":6380,"primaryKey":"pk"}}]}"#;
        let e = find_redis_binding(vcap, None).unwrap().unwrap().endpoint;
        assert_eq!(e.password.unwrap().expose_secret(), "pk");
    }

    /// The shapes that name Sentinels or a cluster, kept in `tests/fixtures/vcap/`.
    const TOPOLOGY_FIXTURES: &[&str] = &[
        "a9s-redis-sentinel.json",
        "tanzu-valkey-ha-sentinels.json",
        "govuk-elasticache-cluster-endpoint.json",
        "metric-registrar-beside-p-redis.json",
    ];

    fn sentinel_of(b: &RedisBinding) -> &SentinelSettings {
        match &b.topology {
            Some(RedisTopology::Sentinel(s)) => s,
            other => panic!("{}: expected Sentinels, got {other:?}", b.name),
        }
    }

    #[test]
    fn the_tanzu_valkey_ha_shape_lists_its_sentinels_and_both_passwords() {
        let b = only("tanzu-valkey-ha-sentinels.json");
        let s = sentinel_of(&b);
        let got: Vec<String> = s.sentinels.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "q-s0.valkey-instance.net.service-instance-1a2b.bosh:26380",
                "q-s1.valkey-instance.net.service-instance-1a2b.bosh:26380",
                "q-s2.valkey-instance.net.service-instance-1a2b.bosh:26380",
            ],
            "a tls_port wins and means TLS"
        );
        assert!(s.tls);
        assert_eq!(s.master, "cf-1a2b3c4d");
        assert_eq!(
            s.password.as_ref().map(|p| p.expose_secret()),
            Some("valkey-fake-sentinel-password")
        );
        assert_eq!(
            b.endpoint.password.as_ref().map(|p| p.expose_secret()),
            Some("valkey-fake-password")
        );
        assert_eq!(b.endpoint.port, 6379);
        assert!(!format!("{b:?}").contains("fake-sentinel-password"));
    }

    #[test]
    fn the_a9s_shape_takes_sentinels_from_hosts_and_passwords_from_the_nested_objects() {
        let b = only("a9s-redis-sentinel.json");
        let s = sentinel_of(&b);
        let got: Vec<String> = s.sentinels.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "redis-a1b2c3-redis-0.node.dc1.consul:26379",
                "redis-a1b2c3-redis-1.node.dc1.consul:26379",
                "redis-a1b2c3-redis-2.node.dc1.consul:26379",
            ]
        );
        assert_eq!(s.master, "redis-a1b2c3");
        assert_eq!(
            s.password.as_ref().map(|p| p.expose_secret()),
            Some("a9s-fake-sentinel-password")
        );
        assert_eq!(s.username.as_deref(), Some("default"));
        assert_eq!(
            b.endpoint.password.as_ref().map(|p| p.expose_secret()),
            Some("a9s-fake-password")
        );
        assert_eq!(b.endpoint.username.as_deref(), Some("default"));
    }

    #[test]
    fn older_a9s_bindings_name_the_sentinel_master_and_port_flat() {
        let vcap = r#"{"a9s-redis":[{"name":"r","credentials":{"host":"m","password":"p",
            "hosts":["s0","s1"],"sentinel_master_name":"mymaster","sentinel_port":"26400"}}]}"#;
        let b = find_redis_binding(vcap, None).unwrap().unwrap();
        let s = sentinel_of(&b);
        assert_eq!(s.master, "mymaster");
        let got: Vec<String> = s.sentinels.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["s0:26400", "s1:26400"]);
    }

    #[test]
    fn cluster_mode_true_names_a_cluster_seeded_by_the_host() {
        let vcap = r#"{"redis-cache":[{"name":"r","credentials":{"host":"h","port":6380,
            "password":"p","cluster_mode":true}}]}"#;
        let b = find_redis_binding(vcap, None).unwrap().unwrap();
        match b.topology {
            Some(RedisTopology::Cluster { nodes }) => {
                assert_eq!(
                    nodes,
                    [NodeAddress {
                        host: "h".into(),
                        port: 6380
                    }]
                );
            }
            other => panic!("expected a cluster, got {other:?}"),
        }
    }

    #[test]
    fn a_cluster_configuration_endpoint_is_left_to_auto_detection() {
        let b = only("govuk-elasticache-cluster-endpoint.json");
        assert!(
            b.topology.is_none(),
            "nothing in the credentials says cluster"
        );
        assert_eq!(
            b.endpoint.host,
            "clustercfg.cf-abc123.xyz.euw2.cache.amazonaws.com"
        );
        assert!(b.endpoint.tls);
    }

    #[test]
    fn a_binding_without_credentials_is_skipped_not_an_error() {
        let b = only("metric-registrar-beside-p-redis.json");
        assert_eq!(b.name, "redis-sessions-store");
        for vcap in [
            r#"{"redis":[{"name":"r"}]}"#,
            r#"{"redis":[{"name":"r","credentials":{}}]}"#,
        ] {
            assert!(find_redis_binding(vcap, None).unwrap().is_none(), "{vcap}");
            // Asked for by name, it is still an error that says why.
            let err = find_redis_binding(vcap, Some("r")).unwrap_err();
            assert!(
                matches!(err, VcapError::BadCredentials { .. }),
                "{vcap}: {err}"
            );
        }
    }

    #[test]
    fn sentinels_without_a_master_name_are_an_error() {
        let vcap =
            r#"{"p.valkey":[{"name":"r","credentials":{"sentinels":[{"host":"s","port":1}]}}]}"#;
        let msg = find_redis_binding(vcap, None).unwrap_err().to_string();
        assert!(msg.contains("master_name"), "{msg}");
    }

    #[test]
    fn unusable_credentials_are_a_typed_error_naming_the_binding() {
        let cases = [
            (
                r#"{"redis":[{"name":"r","credentials":{"host":"h","port":"http"}}]}"#,
                "port is not a port",
            ),
            (
                r#"{"redis":[{"name":"r","credentials":{"host":"h","port":70000}}]}"#,
                "port is not a port",
            ),
            (
                r#"{"redis":[{"name":"r","credentials":{"uri":"redis:///0"}}]}"#,
                "no host",
            ),
            (
                r#"{"redis":[{"name":"r","credentials":{"uri":"::::"}}]}"#,
                "uri is unusable",
            ),
        ];
        for (vcap, expected) in cases {
            let err = find_redis_binding(vcap, None).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, VcapError::BadCredentials { .. }),
                "{vcap}: {msg}"
            );
            assert!(msg.contains("\"r\""), "{vcap}: {msg}");
            assert!(
                msg.contains(expected),
                "{vcap}: expected {expected:?} in {msg}"
            );
        }
    }

    #[test]
    fn malformed_documents_are_typed_errors() {
        assert!(matches!(
            find_redis_binding("{", None),
            Err(VcapError::InvalidJson(_))
        ));
        assert!(matches!(
            find_redis_binding("[]", None),
            Err(VcapError::NotAnObject)
        ));
        assert!(matches!(
            find_redis_binding("null", None),
            Err(VcapError::NotAnObject)
        ));
        // Entries of the wrong type are skipped rather than fatal.
        assert!(
            find_redis_binding(r#"{"redis":"x","other":[1,null,"s"]}"#, None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn no_error_message_contains_a_password() {
        let vcap = r#"{"redis":[{"name":"r","credentials":{"uri":"redis://:topsecret@h:99999"}}]}"#;
        let msg = find_redis_binding(vcap, None).unwrap_err().to_string();
        assert!(!msg.contains("topsecret"), "{msg}");
    }

    /// Arbitrary JSON, biased towards the keys the parser looks at.
    pub(crate) fn arb_json() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("host".to_owned()),
            Just("hostname".to_owned()),
            Just("port".to_owned()),
            Just("tls_port".to_owned()),
            Just("sslPort".to_owned()),
            Just("password".to_owned()),
            Just("uri".to_owned()),
            Just("url".to_owned()),
            Just("tls".to_owned()),
            Just("credentials".to_owned()),
            Just("name".to_owned()),
            Just("tags".to_owned()),
            Just("label".to_owned()),
            "[a-z_]{1,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "redis".prop_map(Value::from),
            "(redis|rediss|valkey|http)://[a-z:@%0-9/.\\[\\]]{0,20}".prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    #[ignore = "fuzzing; run by ci/fuzz.sh"]
    fn fuzz_vcap_services() {
        let input = (
            prop_oneof![arb_json().prop_map(|v| v.to_string()), ".{0,300}"],
            proptest::option::of("[a-z-]{1,6}"),
        );
        crate::fuzz::fuzz_for("vcap_services", input, |(doc, name)| {
            if let Ok(Some(b)) = find_redis_binding(doc, name.as_deref()) {
                assert!(!b.endpoint.host.is_empty(), "a binding without a host");
                assert!(b.endpoint.port > 0, "a binding with port 0");
            }
        });
    }

    proptest! {
        #[test]
        fn arbitrary_json_never_panics(doc in arb_json(), name in proptest::option::of("[a-z]{1,4}")) {
            let _ = find_redis_binding(&doc.to_string(), name.as_deref());
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = find_redis_binding(&text, None);
        }
    }
}
