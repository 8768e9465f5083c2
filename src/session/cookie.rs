//! The session cookie: finding it among the request's cookies, signing and verifying it.
//!
//! The value is `<id>.<mac>`: the 43-character id and its HMAC-SHA256 under the first
//! secret, base64url. Verification tries every configured secret with the `hmac` crate's
//! constant-time comparison, so old cookies survive a secret rotation.

use std::fmt;

use actix_web::http::header::{COOKIE, HeaderMap};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use super::id::{ID_LEN, SessionId};

/// Length of a well-formed cookie value: id, dot, 32-byte MAC in base64url.
pub const COOKIE_VALUE_LEN: usize = ID_LEN + 1 + 43;

/// Why a request's session cookie was not accepted. Logged, then treated as "no session".
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CookieProblem {
    /// More than one cookie with our name: a sign of cookie tossing from a sibling domain.
    #[error("the session cookie appears more than once")]
    Duplicated,
    /// Longer than any cookie we issue.
    #[error("the session cookie is oversized")]
    Oversized,
    /// Contains bytes outside printable ASCII.
    #[error("the session cookie is not ASCII")]
    NotAscii,
    /// Not of the `<id>.<mac>` shape.
    #[error("the session cookie is malformed or unsigned")]
    Malformed,
    /// Well-formed, but no configured secret signed it.
    #[error("the session cookie's signature matches no secret")]
    BadSignature,
}

/// A raw, unverified cookie value; `Debug` hides it because it is a bearer credential.
#[derive(Clone)]
pub struct RawCookie(SecretString);

impl RawCookie {
    /// Wraps a value taken from a request.
    pub fn new(value: &str) -> Self {
        Self(SecretString::from(value.to_owned()))
    }

    /// The value itself; only for verification and for echoing it back in `Set-Cookie`.
    pub(crate) fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for RawCookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawCookie([REDACTED])")
    }
}

/// Finds the session cookie among all `Cookie` headers of a request.
///
/// Returns `Ok(None)` when there is none. Works on bytes, so a header that is not valid
/// UTF-8 elsewhere cannot hide or break our cookie.
pub fn find_session_cookie(
    headers: &HeaderMap,
    name: &str,
) -> Result<Option<RawCookie>, CookieProblem> {
    let mut found: Option<&[u8]> = None;
    for header in headers.get_all(COOKIE) {
        for pair in header.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if pair[..eq].trim_ascii() != name.as_bytes() {
                continue;
            }
            if found.is_some() {
                return Err(CookieProblem::Duplicated);
            }
            found = Some(pair[eq + 1..].trim_ascii());
        }
    }
    let Some(mut value) = found else {
        return Ok(None);
    };
    // RFC 6265 allows a value in double quotes.
    if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
        value = &value[1..value.len() - 1];
    }
    if value.len() > COOKIE_VALUE_LEN {
        return Err(CookieProblem::Oversized);
    }
    if !value.iter().all(|b| b.is_ascii_graphic()) {
        return Err(CookieProblem::NotAscii);
    }
    // All bytes are ASCII, so this cannot fail; the fallback keeps the parser panic-free.
    let text = std::str::from_utf8(value).map_err(|_| CookieProblem::NotAscii)?;
    Ok(Some(RawCookie::new(text)))
}

type HmacSha256 = Hmac<Sha256>;

/// The signing keys: the first signs, all verify. `Debug` shows only how many there are.
#[derive(Clone)]
pub struct Keyring {
    /// Keyed HMAC states, cloned per use so the key schedule runs once at start-up.
    macs: Vec<HmacSha256>,
}

/// A cookie that verified.
#[derive(Debug)]
pub struct Verified {
    /// The session id it carries.
    pub id: SessionId,
    /// Whether a secret other than the first signed it, so it should be re-signed.
    pub needs_resign: bool,
}

impl Keyring {
    /// Builds a keyring from secrets, first one signing; `None` if there are none.
    pub fn new(secrets: &[SecretString]) -> Option<Self> {
        let macs: Vec<HmacSha256> = secrets
            .iter()
            .map(|s| {
                // HMAC accepts keys of any length, so this cannot fail.
                HmacSha256::new_from_slice(s.expose_secret().as_bytes())
                    .expect("HMAC takes keys of any length")
            })
            .collect();
        (!macs.is_empty()).then_some(Self { macs })
    }

    /// The cookie value for an id, signed with the first secret.
    pub fn sign(&self, id: &SessionId) -> String {
        let mut mac = self.macs[0].clone();
        mac.update(id.as_str().as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut value = String::with_capacity(COOKIE_VALUE_LEN);
        value.push_str(id.as_str());
        value.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, &mut value);
        value
    }

    /// Checks a cookie value against every secret, in constant time per secret.
    pub fn verify(&self, raw: &RawCookie) -> Result<Verified, CookieProblem> {
        let value = raw.0.expose_secret();
        if value.len() != COOKIE_VALUE_LEN || value.as_bytes()[ID_LEN] != b'.' {
            return Err(CookieProblem::Malformed);
        }
        let (id_text, tag_text) = (&value[..ID_LEN], &value[ID_LEN + 1..]);
        let id = SessionId::parse(id_text).ok_or(CookieProblem::Malformed)?;
        let mut tag = [0u8; 32];
        match URL_SAFE_NO_PAD.decode_slice(tag_text, &mut tag) {
            Ok(32) => {}
            _ => return Err(CookieProblem::Malformed),
        }
        for (i, key) in self.macs.iter().enumerate() {
            let mut mac = key.clone();
            mac.update(id_text.as_bytes());
            if mac.verify_slice(&tag).is_ok() {
                return Ok(Verified {
                    id,
                    needs_resign: i > 0,
                });
            }
        }
        Err(CookieProblem::BadSignature)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring({} keys, [REDACTED])", self.macs.len())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fuzz::fuzz_for;
    use actix_web::http::header::HeaderValue;
    use proptest::prelude::*;

    pub(crate) fn keyring(secrets: &[&str]) -> Keyring {
        let secrets: Vec<SecretString> = secrets
            .iter()
            .map(|s| SecretString::from(s.to_string()))
            .collect();
        Keyring::new(&secrets).unwrap()
    }

    const A: &str = "secret-a-0123456789abcdef0123456789";
    const B: &str = "secret-b-0123456789abcdef0123456789";

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(COOKIE, HeaderValue::from_bytes(v).unwrap());
        }
        map
    }

    fn find(values: &[&[u8]]) -> Result<Option<String>, CookieProblem> {
        find_session_cookie(&headers(values), "sid")
            .map(|c| c.map(|c| c.0.expose_secret().to_owned()))
    }

    #[test]
    fn a_signed_cookie_verifies_with_its_own_secret() {
        let ring = keyring(&[A]);
        let id = SessionId::generate().unwrap();
        let value = ring.sign(&id);
        assert_eq!(value.len(), COOKIE_VALUE_LEN);
        let v = ring.verify(&RawCookie::new(&value)).unwrap();
        assert_eq!(v.id, id);
        assert!(!v.needs_resign);
    }

    #[test]
    fn an_old_secret_verifies_and_asks_for_a_resign() {
        let id = SessionId::generate().unwrap();
        let old = keyring(&[B]).sign(&id);
        let v = keyring(&[A, B]).verify(&RawCookie::new(&old)).unwrap();
        assert!(v.needs_resign);
        assert_eq!(
            keyring(&[A]).verify(&RawCookie::new(&old)).unwrap_err(),
            CookieProblem::BadSignature
        );
    }

    #[test]
    fn cookies_are_found_among_others_and_across_headers() {
        assert_eq!(
            find(&[b"a=1; sid=xyz; b=2"]).unwrap().as_deref(),
            Some("xyz")
        );
        assert_eq!(find(&[b"a=1", b"sid=\"q\""]).unwrap().as_deref(), Some("q"));
        assert_eq!(find(&[b"a=1; sidx=2; xsid=3"]).unwrap(), None);
        assert_eq!(find(&[]).unwrap(), None);
    }

    #[test]
    fn bad_cookie_headers_are_classified() {
        let long = format!("sid={}", "a".repeat(COOKIE_VALUE_LEN + 1));
        let cases: [(&[&[u8]], CookieProblem); 4] = [
            (&[b"sid=1; sid=2"], CookieProblem::Duplicated),
            (&[b"sid=1", b"sid=2"], CookieProblem::Duplicated),
            (&[long.as_bytes()], CookieProblem::Oversized),
            (&[b"sid=caf\xc3\xa9"], CookieProblem::NotAscii),
        ];
        for (input, expected) in cases {
            assert_eq!(find(input).unwrap_err(), expected, "{input:?}");
        }
    }

    #[test]
    fn malformed_values_are_refused_before_any_mac_is_computed() {
        let ring = keyring(&[A]);
        let good = ring.sign(&SessionId::generate().unwrap());
        let no_dot = good.replace('.', "x");
        let bad_tag = format!("{}!", &good[..COOKIE_VALUE_LEN - 1]);
        for bad in ["", "abc", &no_dot, &bad_tag, &good[..COOKIE_VALUE_LEN - 1]] {
            assert_eq!(
                ring.verify(&RawCookie::new(bad)).unwrap_err(),
                CookieProblem::Malformed,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_output_never_shows_keys_or_cookie_values() {
        let ring = keyring(&[A]);
        let value = ring.sign(&SessionId::generate().unwrap());
        assert!(!format!("{ring:?}").contains(A));
        assert!(!format!("{:?}", RawCookie::new(&value)).contains(&value));
    }

    #[test]
    #[ignore = "fuzzing; run by ci/fuzz.sh"]
    fn fuzz_cookie_verification() {
        let ring = keyring(&[A, B]);
        let valid = ring.sign(&SessionId::generate().unwrap());
        let headers = prop::collection::vec(
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..300),
                "[ -~]{0,200}".prop_map(String::into_bytes),
                (0..COOKIE_VALUE_LEN, any::<u8>()).prop_map(move |(i, b)| {
                    let mut v = format!("x=1; sid={valid}").into_bytes();
                    let at = 9 + i;
                    v[at] = b;
                    v
                }),
            ],
            0..4,
        );
        fuzz_for("cookie_verification", headers, |values| {
            let mut map = HeaderMap::new();
            for v in values {
                if let Ok(h) = HeaderValue::from_bytes(v) {
                    map.append(COOKIE, h);
                }
            }
            if let Ok(Some(raw)) = find_session_cookie(&map, "sid")
                && let Ok(v) = ring.verify(&raw)
            {
                // Only an untouched cookie may verify: re-signing must give it back.
                assert_eq!(ring.sign(&v.id), raw.expose(), "a forged cookie verified");
            }
        });
    }

    proptest! {
        #[test]
        fn any_single_byte_change_to_a_signed_cookie_is_refused(pos in 0..COOKIE_VALUE_LEN, byte in 0x21u8..0x7f) {
            let ring = keyring(&[A]);
            let id = SessionId::generate().unwrap();
            let mut value = ring.sign(&id).into_bytes();
            prop_assume!(value[pos] != byte);
            value[pos] = byte;
            let tampered = String::from_utf8(value).unwrap();
            prop_assert!(ring.verify(&RawCookie::new(&tampered)).is_err());
        }

        #[test]
        fn signing_then_verifying_round_trips(n_keys in 1usize..4, signer in 0usize..4) {
            let secrets: Vec<String> = (0..n_keys).map(|i| format!("{A}-{i}")).collect();
            let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let signer = signer % n_keys;
            let id = SessionId::generate().unwrap();
            let value = keyring(&refs[signer..=signer]).sign(&id);
            let v = keyring(&refs).verify(&RawCookie::new(&value)).unwrap();
            prop_assert_eq!(v.id, id);
            prop_assert_eq!(v.needs_resign, signer > 0);
        }

        #[test]
        fn arbitrary_cookie_headers_never_panic(values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..4)) {
            let mut map = HeaderMap::new();
            for v in &values {
                if let Ok(h) = HeaderValue::from_bytes(v) {
                    map.append(COOKIE, h);
                }
            }
            if let Ok(Some(raw)) = find_session_cookie(&map, "sid") {
                prop_assert!(keyring(&[A]).verify(&raw).is_err());
            }
        }

        #[test]
        fn arbitrary_values_never_verify(value in "[A-Za-z0-9_.-]{0,100}") {
            prop_assert!(keyring(&[A]).verify(&RawCookie::new(&value)).is_err());
        }
    }
}
