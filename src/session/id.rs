//! Session ids and the Redis keys derived from them.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Random bytes in a session id: 256 bits, far past any guessing attack.
const ID_BYTES: usize = 32;
/// Length of an encoded id: 32 bytes in unpadded base64url.
pub const ID_LEN: usize = 43;
/// Bytes of the id's SHA-256 kept in its storage key: 128 bits, collision-free in practice.
const DIGEST_BYTES: usize = 16;

/// A session id: 256 random bits, base64url-encoded. `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

/// The OS random generator failed, which leaves nothing safe to do but refuse the request.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random generator failed: {0}")]
pub struct RandomError(String);

/// Fills a buffer from the OS random generator.
pub fn os_random<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| RandomError(e.to_string()))?;
    Ok(bytes)
}

impl SessionId {
    /// A fresh id from the thread's CSPRNG (rand's `ThreadRng`: ChaCha12, seeded from the OS
    /// and reseeded from it every 64 KiB), the generator actix-session uses for its keys too.
    /// Asking the OS directly cost a `getrandom(2)` per new session, a third of the system
    /// calls of a first visit.
    pub fn generate() -> Self {
        let mut bytes = [0u8; ID_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Accepts text shaped like an id (43 base64url characters); anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let well_formed = text.len() == ID_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        // The last character of 256 bits in base64 carries 4 padding bits, which must be zero
        // for the text to be the one canonical encoding of its bytes.
        (well_formed && URL_SAFE_NO_PAD.decode(text).is_ok()).then(|| Self(text.to_owned()))
    }

    /// The id as it appears, signed, in the cookie.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The storage key of this session: `<prefix>:<first 128 bits of SHA-256(id)>`.
    ///
    /// Storing the digest rather than the id means a Redis dump, `MONITOR` or `SCAN` reveals no
    /// id that works as a cookie (the lesson of Rails' CVE-2019-16782).
    pub fn key(&self, prefix: &str) -> SessionKey {
        let digest = Sha256::digest(self.0.as_bytes());
        let mut key = String::with_capacity(prefix.len() + 1 + 22);
        key.push_str(prefix);
        key.push(':');
        URL_SAFE_NO_PAD.encode_string(&digest[..DIGEST_BYTES], &mut key);
        SessionKey(key)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId([REDACTED])")
    }
}

/// The key a session is stored under; safe to log, useless as a cookie.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(String);

impl SessionKey {
    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_ids_are_43_url_safe_characters_and_unique() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_eq!(a.as_str().len(), ID_LEN);
        assert!(SessionId::parse(a.as_str()).is_some());
        assert_ne!(a, b);
    }

    #[test]
    fn the_key_is_a_prefixed_digest_that_does_not_contain_the_id() {
        let id = SessionId::generate();
        let key = id.key("sess");
        assert!(key.as_str().starts_with("sess:"));
        assert_eq!(key.as_str().len(), "sess:".len() + 22);
        assert!(!key.as_str().contains(id.as_str()));
        assert_eq!(key, id.key("sess"), "the key is deterministic");
    }

    #[test]
    fn debug_hides_the_id() {
        let id = SessionId::generate();
        assert!(!format!("{id:?}").contains(id.as_str()));
    }

    #[test]
    fn malformed_ids_are_refused() {
        let good = SessionId::generate();
        let too_long = format!("{}A", good.as_str());
        let bad_char = format!("{}=", &good.as_str()[..42]);
        for bad in ["", "short", &too_long, &bad_char] {
            assert!(SessionId::parse(bad).is_none(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_accepts_only_canonical_ids(text in ".{0,64}") {
            if let Some(id) = SessionId::parse(&text) {
                prop_assert_eq!(id.as_str(), text.as_str());
                let bytes = URL_SAFE_NO_PAD.decode(&text).unwrap();
                prop_assert_eq!(URL_SAFE_NO_PAD.encode(bytes), text);
            }
        }
    }
}
