//! The session cookie: finding it among the request's cookies, signing and verifying it.
//!
//! The value is `<id>.<issued>.<mac>`: the 43-character id, the Unix time it was issued as
//! exactly 10 digits, and the HMAC-SHA256 of `<id>.<issued>` under the first secret,
//! base64url. Verification tries every configured secret with the `hmac` crate's
//! constant-time comparison, so old cookies survive a secret rotation.
//!
//! The issued time lets the middleware skip `Set-Cookie` until the browser's expiry has
//! fallen a tenth of the TTL behind Redis's sliding one ([`Verified::reissue_due`]); the
//! TTL in the store, not this time, decides when a session ends. Cookies of the older
//! `<id>.<mac>` format (the HMAC of the id alone) still verify, so sessions survive the
//! upgrade, and are always re-issued in the new format.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::header::{COOKIE, HeaderMap};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use super::id::{ID_LEN, SessionId};

/// Digits of the issued time: Unix seconds, zero-padded, enough until the year 2286.
const ISSUED_LEN: usize = 10;
/// The largest issued time the digits hold.
const MAX_ISSUED: u64 = 9_999_999_999;
/// Length of the MAC: 32 bytes in unpadded base64url.
const MAC_LEN: usize = 43;
/// Length of the signed part `<id>.<issued>`, which is a prefix of the value.
const SIGNED_LEN: usize = ID_LEN + 1 + ISSUED_LEN;

/// Length of a cookie value we issue: id, dot, issued time, dot, MAC; also the longest we accept.
pub const COOKIE_VALUE_LEN: usize = SIGNED_LEN + 1 + MAC_LEN;
/// Length of an old-format `<id>.<mac>` value, still accepted so sessions survive the upgrade.
pub const OLD_COOKIE_VALUE_LEN: usize = ID_LEN + 1 + MAC_LEN;

/// How far in the future an issued time may be before the cookie is re-issued; instances'
/// clocks differ by a little, and re-issuing on every touch for that would undo the saving.
pub const MAX_CLOCK_SKEW_SECS: u64 = 60;

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
    /// Not of the `<id>.<issued>.<mac>` shape, nor of the old `<id>.<mac>` one.
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
    /// When it was issued, in Unix seconds; `None` for the old format, which carries no time.
    pub issued: Option<u64>,
    /// Whether a secret other than the first signed it, so it should be re-signed.
    pub needs_resign: bool,
}

impl Verified {
    /// Whether a response that touched the session should send a freshly signed cookie.
    ///
    /// The browser's expiry was fixed when the cookie was issued, while the store's slides
    /// on every touch: re-issuing once a tenth of the TTL has passed (integer division, so a
    /// TTL under 10 s re-issues on every touch) keeps the browser at most 10% behind without
    /// a `Set-Cookie` on every response. Old-format cookies and ones signed by a secret other
    /// than the first are re-issued at once. An issued time in the future is no reason to
    /// refuse a correctly signed cookie; past [`MAX_CLOCK_SKEW_SECS`] it is re-issued with
    /// this instance's time.
    pub fn reissue_due(&self, now: u64, ttl_secs: u64) -> bool {
        match self.issued {
            None => true,
            Some(_) if self.needs_resign => true,
            Some(issued) => {
                issued > now.saturating_add(MAX_CLOCK_SKEW_SECS)
                    || now.saturating_sub(issued) >= ttl_secs / 10
            }
        }
    }
}

/// The system clock in Unix seconds, for signing and for [`Verified::reissue_due`].
///
/// A clock set before 1970 reads as 0: the cookie is then re-issued more often, never refused.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The issued time from its digits; anything but exactly [`ISSUED_LEN`] ASCII digits is `None`.
fn parse_issued(digits: &[u8]) -> Option<u64> {
    if digits.len() != ISSUED_LEN {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
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

    /// The cookie value for an id, issued now by the system clock, signed with the first secret.
    pub fn sign(&self, id: &SessionId) -> String {
        self.sign_at(id, unix_now())
    }

    /// The cookie value for an id issued at `issued` (Unix seconds, capped at 10 digits).
    ///
    /// Separate from [`sign`](Self::sign) so tests can make cookies issued in the past.
    pub fn sign_at(&self, id: &SessionId, issued: u64) -> String {
        use std::fmt::Write;
        let mut value = String::with_capacity(COOKIE_VALUE_LEN);
        value.push_str(id.as_str());
        // Writing to a String cannot fail.
        let _ = write!(
            value,
            ".{:0width$}",
            issued.min(MAX_ISSUED),
            width = ISSUED_LEN
        );
        // The signed part is the value so far, so the MAC needs no buffer of its own.
        let mut mac = self.macs[0].clone();
        mac.update(value.as_bytes());
        value.push('.');
        URL_SAFE_NO_PAD.encode_string(mac.finalize().into_bytes(), &mut value);
        value
    }

    /// Checks a cookie value, new or old format, against every secret, in constant time per
    /// secret.
    pub fn verify(&self, raw: &RawCookie) -> Result<Verified, CookieProblem> {
        let value = raw.0.expose_secret();
        let bytes = value.as_bytes();
        // The MAC covers a prefix of the value: `<id>.<issued>`, or the id alone when old.
        let (signed_len, issued) = match bytes.len() {
            COOKIE_VALUE_LEN if bytes[SIGNED_LEN] == b'.' => {
                let issued = parse_issued(&bytes[ID_LEN + 1..SIGNED_LEN]);
                (SIGNED_LEN, Some(issued.ok_or(CookieProblem::Malformed)?))
            }
            OLD_COOKIE_VALUE_LEN => (ID_LEN, None),
            _ => return Err(CookieProblem::Malformed),
        };
        if bytes[ID_LEN] != b'.' {
            return Err(CookieProblem::Malformed);
        }
        // Both cut points sit next to an ASCII dot, so slicing the text cannot panic.
        let id = SessionId::parse(&value[..ID_LEN]).ok_or(CookieProblem::Malformed)?;
        let mut tag = [0u8; 32];
        match URL_SAFE_NO_PAD.decode_slice(&value[signed_len + 1..], &mut tag) {
            Ok(32) => {}
            _ => return Err(CookieProblem::Malformed),
        }
        for (i, key) in self.macs.iter().enumerate() {
            let mut mac = key.clone();
            mac.update(&bytes[..signed_len]);
            if mac.verify_slice(&tag).is_ok() {
                return Ok(Verified {
                    id,
                    issued,
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

    /// An old-format `<id>.<mac>` value under the first secret, as issued before the upgrade.
    fn sign_old(ring: &Keyring, id: &SessionId) -> String {
        let mut mac = ring.macs[0].clone();
        mac.update(id.as_str().as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{}.{tag}", id.as_str())
    }

    fn verified(issued: Option<u64>, needs_resign: bool) -> Verified {
        Verified {
            id: SessionId::generate(),
            issued,
            needs_resign,
        }
    }

    const NOW: u64 = 1_750_000_000;

    #[test]
    fn a_signed_cookie_verifies_with_its_own_secret() {
        let ring = keyring(&[A]);
        let id = SessionId::generate();
        let before = unix_now();
        let value = ring.sign(&id);
        assert_eq!(value.len(), COOKIE_VALUE_LEN);
        let v = ring.verify(&RawCookie::new(&value)).unwrap();
        assert_eq!(v.id, id);
        assert!(!v.needs_resign);
        let issued = v
            .issued
            .expect("a new-format cookie carries its issued time");
        assert!((before..=unix_now()).contains(&issued), "{issued}");
    }

    #[test]
    fn the_issued_time_is_ten_digits_between_two_dots_and_round_trips() {
        let ring = keyring(&[A]);
        let id = SessionId::generate();
        for (issued, digits) in [
            (NOW, "1750000000"),
            (42, "0000000042"),
            (0, "0000000000"),
            (MAX_ISSUED, "9999999999"),
        ] {
            let value = ring.sign_at(&id, issued);
            assert_eq!(value.len(), COOKIE_VALUE_LEN);
            assert_eq!(&value[..ID_LEN], id.as_str());
            assert_eq!(&value[ID_LEN..SIGNED_LEN + 1], format!(".{digits}."));
            let v = ring.verify(&RawCookie::new(&value)).unwrap();
            assert_eq!(
                (v.id, v.issued, v.needs_resign),
                (id.clone(), Some(issued), false)
            );
        }
        // Past the year 2286 the digits would overflow; the time is capped instead.
        let capped = ring.sign_at(&id, u64::MAX);
        assert_eq!(capped, ring.sign_at(&id, MAX_ISSUED));
    }

    #[test]
    fn an_old_format_cookie_verifies_under_every_secret_with_no_issued_time() {
        let id = SessionId::generate();
        let ring = keyring(&[A, B]);
        for (signer, resign) in [(A, false), (B, true)] {
            let old = sign_old(&keyring(&[signer]), &id);
            assert_eq!(old.len(), OLD_COOKIE_VALUE_LEN);
            let header = format!("sid={old}");
            assert_eq!(
                find(&[header.as_bytes()]).unwrap().as_deref(),
                Some(old.as_str())
            );
            let v = ring.verify(&RawCookie::new(&old)).unwrap();
            assert_eq!((v.id, v.issued, v.needs_resign), (id.clone(), None, resign));
        }
    }

    #[test]
    fn a_cookie_whose_issued_digits_were_changed_does_not_verify() {
        let ring = keyring(&[A]);
        let id = SessionId::generate();
        let value = ring.sign_at(&id, NOW);
        for forged_time in [NOW + 1, NOW - 1, NOW + 1800, 0] {
            let forged = format!(
                "{}{forged_time:010}{}",
                &value[..ID_LEN + 1],
                &value[SIGNED_LEN..]
            );
            assert_eq!(forged.len(), COOKIE_VALUE_LEN);
            assert_eq!(
                ring.verify(&RawCookie::new(&forged)).unwrap_err(),
                CookieProblem::BadSignature,
                "{forged_time}"
            );
        }
    }

    #[test]
    fn neither_format_passes_for_the_other() {
        let ring = keyring(&[A]);
        let id = SessionId::generate();
        let new = ring.sign_at(&id, NOW);
        let old = sign_old(&ring, &id);
        // The time stripped from a new cookie, or added to an old one, under the same MAC.
        let stripped = format!("{}{}", &new[..ID_LEN], &new[SIGNED_LEN..]);
        let dated = format!("{}{NOW}{}", &old[..ID_LEN + 1], &old[ID_LEN..]);
        for forged in [stripped, dated] {
            assert_eq!(
                ring.verify(&RawCookie::new(&forged)).unwrap_err(),
                CookieProblem::BadSignature
            );
        }
    }

    #[test]
    fn malformed_issued_times_are_refused_before_any_mac_is_computed() {
        let ring = keyring(&[A]);
        let value = ring.sign_at(&SessionId::generate(), NOW);
        let (id, tag) = (&value[..ID_LEN], &value[SIGNED_LEN + 1..]);
        let cases = [
            format!("{id}.17500000x0.{tag}"),
            format!("{id}.+750000000.{tag}"),
            format!("{id}. 750000000.{tag}"),
            format!("{id}.-750000000.{tag}"),
            format!("{id}.175000000.{tag}"),
            format!("{id}.17500000000.{tag}"),
            format!("{id}..{tag}"),
            format!("{id}.1750000000x{tag}"),
            format!("{id}x1750000000.{tag}"),
            format!("{id}.1750000000.{tag}x"),
        ];
        for bad in &cases {
            assert_eq!(
                ring.verify(&RawCookie::new(bad)).unwrap_err(),
                CookieProblem::Malformed,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn reissue_is_due_for_old_formats_other_secrets_a_tenth_of_the_ttl_and_the_far_future() {
        let ttl = 1800;
        let cases = [
            (None, false, false, "old format"),
            (Some(NOW), true, false, "signed by an older secret"),
            (Some(NOW), false, true, "just issued"),
            (Some(NOW - 179), false, true, "179 s of a 180 s tenth"),
            (Some(NOW - 180), false, false, "a tenth of the TTL old"),
            (
                Some(NOW - 100_000),
                false,
                false,
                "older than the TTL itself",
            ),
            (Some(0), false, false, "issued in 1970"),
            (
                Some(NOW + MAX_CLOCK_SKEW_SECS),
                false,
                true,
                "a skewed clock ahead",
            ),
            (
                Some(NOW + MAX_CLOCK_SKEW_SECS + 1),
                false,
                false,
                "too far in the future",
            ),
            (Some(MAX_ISSUED), false, false, "the year 2286"),
        ];
        for (issued, resign, keep, why) in cases {
            let due = verified(issued, resign).reissue_due(NOW, ttl);
            assert_eq!(due, !keep, "{why}");
        }
    }

    #[test]
    fn a_ttl_under_ten_seconds_reissues_on_every_touch() {
        for ttl in 1..10 {
            assert!(
                verified(Some(NOW), false).reissue_due(NOW, ttl),
                "TTL {ttl}"
            );
            assert!(
                verified(Some(NOW + 5), false).reissue_due(NOW, ttl),
                "TTL {ttl}"
            );
        }
        assert!(!verified(Some(NOW), false).reissue_due(NOW, 10));
        assert!(verified(Some(NOW - 1), false).reissue_due(NOW, 10));
    }

    #[test]
    fn an_old_secret_verifies_and_asks_for_a_resign() {
        let id = SessionId::generate();
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
        let good = ring.sign(&SessionId::generate());
        let no_dot = good.replace('.', "x");
        let bad_tag = format!("{}!", &good[..COOKIE_VALUE_LEN - 1]);
        let old = sign_old(&ring, &SessionId::generate());
        let old_no_dot = old.replace('.', "x");
        let old_bad_tag = format!("{}!", &old[..OLD_COOKIE_VALUE_LEN - 1]);
        for bad in [
            "",
            "abc",
            &no_dot,
            &bad_tag,
            &good[..COOKIE_VALUE_LEN - 1],
            &old_no_dot,
            &old_bad_tag,
            &old[..OLD_COOKIE_VALUE_LEN - 1],
        ] {
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
        let value = ring.sign(&SessionId::generate());
        assert!(!format!("{ring:?}").contains(A));
        assert!(!format!("{:?}", RawCookie::new(&value)).contains(&value));
    }

    #[test]
    #[ignore = "fuzzing; run by ci/fuzz.sh"]
    fn fuzz_cookie_verification() {
        let ring = keyring(&[A, B]);
        let valid = ring.sign(&SessionId::generate());
        let valid_old = sign_old(&ring, &SessionId::generate());
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
                (0..OLD_COOKIE_VALUE_LEN, any::<u8>()).prop_map(move |(i, b)| {
                    let mut v = format!("x=1; sid={valid_old}").into_bytes();
                    v[9 + i] = b;
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
                // Only an untouched cookie may verify: re-signing the same id with the same
                // issued time (or in the old format) must give it back.
                let again = match v.issued {
                    Some(issued) => ring.sign_at(&v.id, issued),
                    None => sign_old(&ring, &v.id),
                };
                assert_eq!(again, raw.0.expose_secret(), "a forged cookie verified");
            }
        });
    }

    proptest! {
        #[test]
        fn any_single_byte_change_to_a_signed_cookie_is_refused(pos in 0..COOKIE_VALUE_LEN, byte in 0x21u8..0x7f, issued in 0..=MAX_ISSUED) {
            let ring = keyring(&[A]);
            let id = SessionId::generate();
            let mut value = ring.sign_at(&id, issued).into_bytes();
            prop_assume!(value[pos] != byte);
            value[pos] = byte;
            let tampered = String::from_utf8(value).unwrap();
            prop_assert!(ring.verify(&RawCookie::new(&tampered)).is_err());
        }

        #[test]
        fn any_single_byte_change_to_an_old_format_cookie_is_refused(pos in 0..OLD_COOKIE_VALUE_LEN, byte in 0x21u8..0x7f) {
            let ring = keyring(&[A]);
            let mut value = sign_old(&ring, &SessionId::generate()).into_bytes();
            prop_assume!(value[pos] != byte);
            value[pos] = byte;
            let tampered = String::from_utf8(value).unwrap();
            prop_assert!(ring.verify(&RawCookie::new(&tampered)).is_err());
        }

        #[test]
        fn a_cookie_is_reissued_exactly_once_a_tenth_of_its_ttl_has_passed(ttl in 10u64..=31_536_000, age in 0u64..=31_536_000) {
            let due = verified(Some(NOW - age), false).reissue_due(NOW, ttl);
            prop_assert_eq!(due, age >= ttl / 10);
        }

        #[test]
        fn signing_then_verifying_round_trips(n_keys in 1usize..4, signer in 0usize..4) {
            let secrets: Vec<String> = (0..n_keys).map(|i| format!("{A}-{i}")).collect();
            let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let signer = signer % n_keys;
            let id = SessionId::generate();
            let value = keyring(&refs[signer..=signer]).sign_at(&id, NOW);
            let v = keyring(&refs).verify(&RawCookie::new(&value)).unwrap();
            prop_assert_eq!(v.id, id);
            prop_assert_eq!(v.issued, Some(NOW));
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
