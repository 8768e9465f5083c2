//! The access line: one per request, written by a formatter of its own.
//!
//! It is the one log line every request writes, so it skips tracing's generic event
//! formatting (field visitors, `fmt::Debug` for every value, a calendar computation per
//! timestamp), which cost about a tenth of the service's CPU per request (README,
//! Performance). It keeps the shape tracing's formatters gave it, so log searches and
//! `ci/cf_local.py` read it unchanged, and `RUST_LOG` still governs it as the target
//! `redis_sessions::access` at INFO.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::cookie::time::{OffsetDateTime, PrimitiveDateTime};

use super::output::LineWriter;

/// Whether lines are JSON (else text); set once by [`super::init`].
static JSON: AtomicBool = AtomicBool::new(false);

/// Chooses the line format; [`super::init`] calls it with `LOG_FORMAT`.
pub(super) fn use_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// What one access line says.
#[derive(Debug)]
pub struct Access<'a> {
    /// The request method.
    pub method: &'a str,
    /// The request path, without the query.
    pub path: &'a str,
    /// The response status.
    pub status: u16,
    /// Time spent in the app.
    pub duration: Duration,
    /// The router's request id, or ours.
    pub request_id: &'a str,
}

thread_local! {
    /// The line being written, and the second whose date and time text it last used.
    static SCRATCH: RefCell<(Vec<u8>, u64, [u8; 19])> = const { RefCell::new((Vec::new(), u64::MAX, [0; 19])) };
}

/// Writes the access line for a request, unless `RUST_LOG` turned it off.
pub fn write(access: &Access<'_>) {
    if !tracing::enabled!(target: "redis_sessions::access", tracing::Level::INFO) {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    SCRATCH.with(|scratch| {
        let Ok(mut scratch) = scratch.try_borrow_mut() else {
            return;
        };
        let (line, second, datetime) = &mut *scratch;
        if *second != now.as_secs() {
            *second = now.as_secs();
            *datetime = datetime_text(now.as_secs());
        }
        line.clear();
        format(
            line,
            access,
            datetime,
            now.subsec_micros(),
            JSON.load(Ordering::Relaxed),
        );
        // Nothing useful can be done here about a failed write to stdout.
        let _ = LineWriter.write_all(line);
    });
}

/// Formats one line into `out`: `timestamp` is `YYYY-MM-DDTHH:MM:SS` in UTC.
fn format(out: &mut Vec<u8>, a: &Access<'_>, datetime: &[u8; 19], micros: u32, json: bool) {
    // Microseconds, so the milliseconds print with three decimals without floating point.
    let micros_in_app = u64::try_from(a.duration.as_micros()).unwrap_or(u64::MAX);
    let (ms, frac) = (micros_in_app / 1000, micros_in_app % 1000);
    if json {
        out.extend_from_slice(b"{\"timestamp\":\"");
        out.extend_from_slice(datetime);
        let _ = write!(
            out,
            ".{micros:06}Z\",\"level\":\"INFO\",\"message\":\"request\",\"method\":"
        );
        json_string(out, a.method);
        out.extend_from_slice(b",\"path\":");
        json_string(out, a.path);
        let _ = write!(
            out,
            ",\"status\":{},\"duration_ms\":{ms}.{frac:03},\"request_id\":",
            a.status
        );
        json_string(out, a.request_id);
        out.extend_from_slice(b",\"target\":\"redis_sessions::access\",\"span\":{\"request_id\":");
        json_string(out, a.request_id);
        out.extend_from_slice(b",\"name\":\"request\"}}\n");
    } else {
        out.extend_from_slice(datetime);
        let _ = writeln!(
            out,
            ".{micros:06}Z  INFO request: request method={} path={} status={} duration_ms={ms}.{frac:03} request_id={}",
            a.method, a.path, a.status, a.request_id
        );
    }
}

/// A JSON string literal, escaped by serde_json.
fn json_string(out: &mut Vec<u8>, text: &str) {
    // Writing a &str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// `YYYY-MM-DDTHH:MM:SS` for a Unix time, in UTC; the `time` crate (which actix-web's cookie
/// support already brings) does the calendar. Past year 9999, the last second it knows.
fn datetime_text(unix_secs: u64) -> [u8; 19] {
    let t = i64::try_from(unix_secs)
        .ok()
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .unwrap_or(PrimitiveDateTime::MAX.assume_utc());
    let mut text = [0u8; 19];
    let mut cursor = &mut text[..];
    let _ = write!(
        cursor,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line(json: bool, a: &Access<'_>) -> String {
        let mut out = Vec::new();
        format(&mut out, a, &datetime_text(1_796_283_947), 527_374, json);
        String::from_utf8(out).unwrap()
    }

    const GET: Access<'static> = Access {
        method: "GET",
        path: "/",
        status: 200,
        duration: Duration::from_micros(5_427),
        request_id: "bc7910f8-27ee-4fb5-b0b3-83ff5d7ca46c",
    };

    #[test]
    fn the_json_line_has_the_shape_tracing_gave_it() {
        assert_eq!(
            line(true, &GET),
            "{\"timestamp\":\"2026-12-03T07:45:47.527374Z\",\"level\":\"INFO\",\"message\":\"request\",\
             \"method\":\"GET\",\"path\":\"/\",\"status\":200,\"duration_ms\":5.427,\
             \"request_id\":\"bc7910f8-27ee-4fb5-b0b3-83ff5d7ca46c\",\"target\":\"redis_sessions::access\",\
             \"span\":{\"request_id\":\"bc7910f8-27ee-4fb5-b0b3-83ff5d7ca46c\",\"name\":\"request\"}}\n"
        );
    }

    #[test]
    fn the_text_line_has_the_shape_tracing_gave_it() {
        assert_eq!(
            line(
                false,
                &Access {
                    duration: Duration::from_micros(210),
                    ..GET
                }
            ),
            "2026-12-03T07:45:47.527374Z  INFO request: request method=GET path=/ status=200 \
             duration_ms=0.210 request_id=bc7910f8-27ee-4fb5-b0b3-83ff5d7ca46c\n"
        );
    }

    #[test]
    fn dates_around_leap_days_and_centuries_are_right() {
        // Expected values from Python's datetime.utcfromtimestamp.
        for (secs, text) in [
            (0, "1970-01-01T00:00:00"),
            (951_782_399, "2000-02-28T23:59:59"),
            (951_782_400, "2000-02-29T00:00:00"),
            (951_868_800, "2000-03-01T00:00:00"),
            (1_709_164_800, "2024-02-29T00:00:00"),
            (4_107_456_000, "2100-02-28T00:00:00"),
            (4_107_542_400, "2100-03-01T00:00:00"),
            (253_402_300_799, "9999-12-31T23:59:59"),
        ] {
            assert_eq!(
                std::str::from_utf8(&datetime_text(secs)).unwrap(),
                text,
                "{secs}"
            );
        }
    }

    proptest! {
        #[test]
        fn any_line_is_one_line_and_valid_json(method in "[A-Z]{1,8}", path in "\\PC{0,40}", id in "[!-~]{1,128}", status in 100u16..600, micros in 0u64..10_000_000) {
            let a = Access { method: &method, path: &path, status, duration: Duration::from_micros(micros), request_id: &id };
            let text = line(true, &a);
            prop_assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(v["path"].as_str(), Some(path.as_str()));
            prop_assert_eq!(v["request_id"].as_str(), Some(id.as_str()));
            prop_assert_eq!(v["status"].as_u64(), Some(u64::from(status)));
            let ms = v["duration_ms"].as_f64().unwrap();
            prop_assert!((ms * 1000.0 - micros as f64).abs() < 0.5);
        }

        #[test]
        fn consecutive_days_follow_the_calendar(days in 0u64..2_932_896) {
            let date = |days: u64| {
                let text = datetime_text(days * 86_400);
                let text = std::str::from_utf8(&text).unwrap().to_owned();
                let num = |range: std::ops::Range<usize>| text[range].parse::<i64>().unwrap();
                (num(0..4), num(5..7), num(8..10))
            };
            let (y0, m0, d0) = date(days);
            let (y1, m1, d1) = date(days + 1);
            let leap = (y0 % 4 == 0 && y0 % 100 != 0) || y0 % 400 == 0;
            let month_len = match m0 { 2 if leap => 29, 2 => 28, 4 | 6 | 9 | 11 => 30, _ => 31 };
            prop_assert!((1..=month_len).contains(&d0));
            if d0 < month_len {
                prop_assert_eq!((y1, m1, d1), (y0, m0, d0 + 1));
            } else if m0 < 12 {
                prop_assert_eq!((y1, m1, d1), (y0, m0 + 1, 1));
            } else {
                prop_assert_eq!((y1, m1, d1), (y0 + 1, 1, 1));
            }
        }
    }
}
