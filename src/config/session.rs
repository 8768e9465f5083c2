//! Sessions and their cookie: secrets, lifetime, cookie name and `Secure`, key prefix.

use std::time::Duration;

use secrecy::SecretString;

use super::ConfigError;
use super::env::{RawEnv, parse_num};

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

/// Shortest accepted signing secret: HMAC-SHA256 wants at least its output size in key.
pub const MIN_SECRET_BYTES: usize = 32;

/// RFC 6265 cookie-name characters (an RFC 7230 token).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl SessionSettings {
    /// `SESSION_SECRET`, `SESSION_TTL_SECONDS`, `SESSION_COOKIE_NAME`, `SESSION_KEY_PREFIX` and
    /// `COOKIE_SECURE`.
    pub(super) fn from_raw(raw: &RawEnv) -> Result<Self, ConfigError> {
        let mut secrets = Vec::new();
        if let Some(all) = raw.session_secret.as_deref() {
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
        let cookie_name = raw.session_cookie_name.as_deref().unwrap_or("sid").trim();
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
        let key_prefix = raw.session_key_prefix.as_deref().unwrap_or("sess").trim();
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
        let cookie_secure = match raw.cookie_secure.as_deref().map(str::trim) {
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
                raw.session_ttl_seconds.as_deref(),
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
}
