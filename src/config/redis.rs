//! Where the Redis is and how to talk to it, however it was described.

use secrecy::SecretString;
use url::Url;

/// The default Redis port, used when a binding or URL names none.
pub const DEFAULT_REDIS_PORT: u16 = 6379;

/// A Redis server to connect to; `Debug` never shows the password.
#[derive(Clone, Debug)]
pub struct RedisEndpoint {
    /// Host name or IP address.
    pub host: String,
    /// TCP port (the TLS port when `tls` is set).
    pub port: u16,
    /// Whether to speak TLS, verifying the server certificate.
    pub tls: bool,
    /// ACL user name (Redis 6+), if any.
    pub username: Option<String>,
    /// A user name that may be a broker's placeholder (a binding's `uri` beside an explicit
    /// password field): the password alone is tried first, then this user name.
    pub tentative_username: Option<String>,
    /// Password or access key, if any.
    pub password: Option<SecretString>,
    /// Logical database number.
    pub db: i64,
}

/// Why a Redis URL was refused; never carries the URL itself, which may hold a password.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RedisUrlError {
    /// The text is not a URL at all.
    #[error("it is not a valid URL")]
    NotAUrl,
    /// The scheme is not one Redis speaks.
    #[error("scheme \"{0}\" is not redis, rediss, valkey or valkeys")]
    UnsupportedScheme(String),
    /// No host in the URL.
    #[error("it has no host")]
    MissingHost,
    /// The path is not a database number.
    #[error("its path must be a database number such as /0")]
    BadDatabase,
}

/// Whether a URL scheme names Redis, and whether it means TLS.
pub fn scheme_tls(scheme: &str) -> Option<bool> {
    match scheme.to_ascii_lowercase().as_str() {
        "redis" | "valkey" => Some(false),
        "rediss" | "valkeys" => Some(true),
        _ => None,
    }
}

/// The parts of a `redis://` URL, each optional so a binding's fields can take precedence.
#[derive(Debug, Default)]
pub(crate) struct UrlParts {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub tls: bool,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub db: Option<i64>,
}

/// Splits a Redis URL into its parts, percent-decoding the user name and password.
pub(crate) fn parse_url_parts(text: &str) -> Result<UrlParts, RedisUrlError> {
    let url = Url::parse(text.trim()).map_err(|_| RedisUrlError::NotAUrl)?;
    let tls = scheme_tls(url.scheme())
        .ok_or_else(|| RedisUrlError::UnsupportedScheme(url.scheme().to_owned()))?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        // IPv6 literals come back bracketed; the socket layer wants them bare.
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned());
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let username = Some(decode(url.username())).filter(|u| !u.is_empty());
    let password = url
        .password()
        .map(decode)
        .filter(|p| !p.is_empty())
        .map(SecretString::from);
    let db = match url.path().trim_start_matches('/') {
        "" => None,
        path => Some(
            path.parse::<i64>()
                .map_err(|_| RedisUrlError::BadDatabase)?,
        ),
    };
    Ok(UrlParts {
        host,
        port: url.port(),
        tls,
        username,
        password,
        db,
    })
}

impl RedisEndpoint {
    /// Parses `REDIS_URL`-style text: `redis[s]://[user][:password@]host[:port][/db]`.
    pub fn from_url(text: &str) -> Result<Self, RedisUrlError> {
        let parts = parse_url_parts(text)?;
        Ok(Self {
            host: parts.host.ok_or(RedisUrlError::MissingHost)?,
            port: parts.port.unwrap_or(DEFAULT_REDIS_PORT),
            tls: parts.tls,
            username: parts.username,
            tentative_username: None,
            password: parts.password,
            db: parts.db.unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn a_full_url_is_split_and_its_password_decoded() {
        let e = RedisEndpoint::from_url("rediss://default:p%40ss%2Fw@cache.example.com:6380/2")
            .unwrap();
        assert_eq!(e.host, "cache.example.com");
        assert_eq!(e.port, 6380);
        assert!(e.tls);
        assert_eq!(e.username.as_deref(), Some("default"));
        assert_eq!(e.password.unwrap().expose_secret(), "p@ss/w");
        assert_eq!(e.db, 2);
    }

    #[test]
    fn a_bare_url_gets_the_default_port_and_database() {
        let e = RedisEndpoint::from_url("redis://127.0.0.1").unwrap();
        assert_eq!((e.port, e.db, e.tls), (6379, 0, false));
        assert!(e.password.is_none() && e.username.is_none());
    }

    #[test]
    fn an_ipv6_host_loses_its_brackets() {
        let e = RedisEndpoint::from_url("redis://[::1]:7000").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 7000));
    }

    #[test]
    fn other_schemes_and_junk_are_refused() {
        let cases = [
            (
                "http://example.com",
                RedisUrlError::UnsupportedScheme("http".into()),
            ),
            ("not a url", RedisUrlError::NotAUrl),
            ("redis://host/abc", RedisUrlError::BadDatabase),
            ("redis:///0", RedisUrlError::MissingHost),
        ];
        for (input, expected) in cases {
            assert_eq!(
                RedisEndpoint::from_url(input).unwrap_err(),
                expected,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn debug_output_hides_the_password() {
        let e = RedisEndpoint::from_url("redis://:hunter2-secret@h:1").unwrap();
        assert!(!format!("{e:?}").contains("hunter2"));
    }
}
