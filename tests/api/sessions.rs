//! Session behaviour over HTTP. The suite in `both_stores!` runs against Redis and memory;
//! the rest needs Redis (several instances, inspecting keys, restarts).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use deadpool_redis::redis;
use hmac::{Hmac, Mac};
use redis_sessions::session::cookie::{Keyring, unix_now};
use redis_sessions::session::id::SessionId;
use secrecy::SecretString;
use sha2::Sha256;

use crate::support::topology::{calls_of, command_calls};
use crate::support::{
    RedisServer, SECRET_A, SECRET_B, TestApp, cookie_id, session_cookie, set_cookie_headers,
};

/// `sid=<value>` for the session of `cookie`, signed with the test secret as if issued
/// `age` seconds ago (ahead of now when negative), so no test waits for a cookie to age.
fn issued_ago(cookie: &str, age: i64) -> String {
    let id = SessionId::parse(cookie_id(cookie)).expect("a session id");
    let issued = unix_now()
        .checked_add_signed(-age)
        .expect("a time after 1970");
    let ring = Keyring::new(&[SecretString::from(SECRET_A)]).expect("a keyring");
    format!("sid={}", ring.sign_at(&id, issued))
}

/// `sid=<id>.<mac>` for the session of `cookie`: the format browsers held before cookies
/// carried their issued time, the HMAC of the id alone under the test secret.
fn old_format(cookie: &str) -> String {
    let id = cookie_id(cookie);
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET_A.as_bytes()).expect("any key length");
    mac.update(id.as_bytes());
    format!(
        "sid={id}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// The issued time in a `sid=<id>.<issued>.<mac>` pair.
fn issued_of(cookie: &str) -> u64 {
    cookie
        .split('.')
        .nth(1)
        .and_then(|t| t.parse().ok())
        .expect("an issued time")
}

/// Runs each test body once per store. `$redis` is `Some` for the Redis variant.
macro_rules! both_stores {
    ($($name:ident($app:ident) $body:block)*) => {
        mod on_redis {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let redis = RedisServer::start();
                    let $app = TestApp::spawn(Some(&redis), &[]).await;
                    $body
                    $app.stop().await;
                }
            )*
        }
        mod on_memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let $app = TestApp::spawn(None, &[]).await;
                    $body
                    $app.stop().await;
                }
            )*
        }
    };
}

both_stores! {
    refreshing_counts_up_in_one_session(app) {
        let (first, cookie) = app.visit(None).await;
        assert_eq!(first, 1);
        let cookie = cookie.expect("the first visit sets the session cookie");
        for expected in 2..=5 {
            assert_eq!(app.visit(Some(&cookie)).await.0, expected);
        }
    }

    the_cookie_is_http_only_lax_root_and_lives_as_long_as_the_session(app) {
        let res = app.send("GET", "/", None).await;
        let headers = set_cookie_headers(res.headers());
        assert_eq!(headers.len(), 1, "{headers:?}");
        let h = &headers[0];
        for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=1800"] {
            assert!(h.contains(attribute), "missing {attribute} in {h}");
        }
        assert!(!h.contains("Secure"), "COOKIE_SECURE=false in tests: {h}");
        let value = h.trim_start_matches("sid=").split(';').next().unwrap();
        assert_eq!(value.len(), 98, "id, issued time, MAC: 43 + 1 + 10 + 1 + 43 characters");
    }

    a_second_visit_soon_after_the_first_sets_no_cookie(app) {
        let (_, cookie) = app.visit(None).await;
        let cookie = cookie.unwrap();
        let (visits, again) = app.visit(Some(&cookie)).await;
        assert_eq!(visits, 2);
        assert_eq!(again, None, "the browser's cookie is not due for re-issue yet");
        let res = app.send("POST", "/api/visits", Some(&cookie)).await;
        assert!(set_cookie_headers(res.headers()).is_empty(), "nor after an API count");
        let res = app.send("GET", "/api/session", Some(&cookie)).await;
        assert!(set_cookie_headers(res.headers()).is_empty(), "nor after a read");
        assert_eq!(res.json::<serde_json::Value>().await.unwrap()["visits"], 3);
    }

    a_cookie_issued_over_a_tenth_of_the_ttl_ago_is_reissued(app) {
        let (_, cookie) = app.visit(None).await;
        let cookie = cookie.unwrap();
        // The TTL is 1800 s, so a cookie is due at 180 s; 10 s of margin for a slow run.
        let (visits, kept) = app.visit(Some(&issued_ago(&cookie, 170))).await;
        assert_eq!((visits, kept), (2, None), "170 s is under a tenth of the TTL");

        let aged = issued_ago(&cookie, 181);
        let before = unix_now();
        let res = app.send("GET", "/", Some(&aged)).await;
        let headers = set_cookie_headers(res.headers());
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers[0].contains("Max-Age=1800"), "the full TTL again: {}", headers[0]);
        let fresh = session_cookie(res.headers()).unwrap();
        assert_eq!(cookie_id(&fresh), cookie_id(&cookie), "the same session");
        assert!((before..=unix_now()).contains(&issued_of(&fresh)), "issued now: {fresh}");
        let (visits, again) = app.visit(Some(&fresh)).await;
        assert_eq!((visits, again), (4, None), "the re-issued cookie works and is not due");
    }

    a_cookie_issued_in_the_future_keeps_its_session(app) {
        let (_, cookie) = app.visit(None).await;
        let cookie = cookie.unwrap();
        let (visits, kept) = app.visit(Some(&issued_ago(&cookie, -30))).await;
        assert_eq!((visits, kept), (2, None), "30 s ahead is clock skew between instances");
        let (visits, fresh) = app.visit(Some(&issued_ago(&cookie, -3600))).await;
        assert_eq!(visits, 3, "a correctly signed cookie is never refused for its time");
        let fresh = fresh.expect("an hour ahead is re-issued with this instance's time");
        assert_eq!(cookie_id(&fresh), cookie_id(&cookie));
        assert!(issued_of(&fresh) <= unix_now());
    }

    an_old_format_cookie_keeps_its_session_and_is_reissued_in_the_new_format(app) {
        let (_, cookie) = app.visit(None).await;
        let old = old_format(&cookie.unwrap());
        assert_eq!(old.len(), "sid=".len() + 87);
        let (visits, fresh) = app.visit(Some(&old)).await;
        assert_eq!(visits, 2, "the session survives the upgrade");
        let fresh = fresh.expect("an old-format cookie is re-issued on its first touch");
        assert_eq!(cookie_id(&fresh), cookie_id(&old), "the same session");
        assert_eq!(fresh.len(), "sid=".len() + 98, "in the new format: {fresh}");
        let (visits, again) = app.visit(Some(&fresh)).await;
        assert_eq!((visits, again), (3, None));
    }

    the_api_counts_and_reads_without_counting(app) {
        let res = app.send("POST", "/api/visits", None).await;
        assert_eq!(res.status(), 200);
        let cookie = session_cookie(res.headers()).unwrap();
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["visits"], 1);
        assert_eq!(body["instance_index"], 0);
        assert_eq!(body["ttl_seconds"], 1800);
        assert!(body["store"] == "redis" || body["store"] == "memory");
        let res = app.send("POST", "/api/visits", Some(&cookie)).await;
        assert_eq!(res.json::<serde_json::Value>().await.unwrap()["visits"], 2);
        for _ in 0..2 {
            assert_eq!(app.session_json(Some(&cookie)).await["visits"], 2, "reading does not count");
        }
    }

    reading_without_a_session_creates_none(app) {
        let res = app.send("GET", "/api/session", None).await;
        assert_eq!(res.status(), 200);
        assert!(res.headers().get("set-cookie").is_none(), "no session, no cookie");
        assert_eq!(res.json::<serde_json::Value>().await.unwrap()["visits"], 0);
        for path in ["/health", "/ready"] {
            let res = app.send("GET", path, None).await;
            assert!(res.headers().get("set-cookie").is_none(), "{path} set a cookie");
        }
    }

    forget_me_purges_and_redirects_to_a_fresh_count(app) {
        let (_, cookie) = app.visit(None).await;
        let cookie = cookie.unwrap();
        app.visit(Some(&cookie)).await;
        let res = app.send("POST", "/reset", Some(&cookie)).await;
        assert_eq!(res.status(), 303);
        assert_eq!(res.headers()["location"], "/");
        let cleared = set_cookie_headers(res.headers());
        assert!(cleared.iter().any(|h| h.starts_with("sid=;") && h.contains("Max-Age=0")), "{cleared:?}");
        let (visits, new_cookie) = app.visit(Some(&cookie)).await;
        assert_eq!(visits, 1, "the purged id is not revived");
        assert_ne!(new_cookie.as_deref(), Some(cookie.as_str()), "a new id is issued");
    }

    delete_api_answers_204_and_clears_the_cookie(app) {
        let (_, cookie) = app.visit(None).await;
        let cookie = cookie.unwrap();
        let res = app.send("DELETE", "/api/session", Some(&cookie)).await;
        assert_eq!(res.status(), 204);
        assert!(set_cookie_headers(res.headers()).iter().any(|h| h.contains("Max-Age=0")));
        assert_eq!(app.session_json(Some(&cookie)).await["visits"], 0);
    }

    a_tampered_cookie_starts_a_fresh_session_and_leaves_the_real_one_alone(app) {
        let (_, cookie) = app.visit(None).await;
        let cookie = cookie.unwrap();
        app.visit(Some(&cookie)).await;
        // Flip one character of the id part.
        let mut bytes = cookie.clone().into_bytes();
        let i = "sid=".len() + 5;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        let (visits, fresh) = app.visit(Some(&tampered)).await;
        assert_eq!(visits, 1);
        assert!(fresh.is_some() && fresh.as_deref() != Some(cookie.as_str()));
        assert_eq!(app.visit(Some(&cookie)).await.0, 3, "the real session is untouched");
    }

    garbage_cookies_never_cause_a_server_error(app) {
        let (_, good) = app.visit(None).await;
        let good = good.unwrap();
        let value = good.trim_start_matches("sid=").to_owned();
        let many: String = (0..100).map(|i| format!("c{i}=v{i}; ")).collect::<String>() + &good;
        let cases: Vec<String> = vec![
            "sid=".into(),
            "sid=unsigned-value".into(),
            format!("sid={}", &value[..43]),
            format!("sid={value}x"),
            format!("sid={}", "A".repeat(4000)),
            format!("{good}; {good}"),
            format!("sid={}.{}", &value[..43], "A".repeat(43)),
            format!("sid={}.0000000000.{}", &value[..43], "A".repeat(43)),
            format!("sid={}.abcdefghij.{}", &value[..43], &value[55..]),
            "sid=%00%ff".into(),
            "=; ;;; sid".into(),
            many,
        ];
        for cookie in &cases {
            for (method, path) in [("GET", "/"), ("POST", "/api/visits"), ("GET", "/api/session"), ("DELETE", "/api/session"), ("POST", "/reset")] {
                let res = app.send(method, path, Some(cookie)).await;
                assert!(res.status().as_u16() < 500, "{method} {path} with {cookie:.60}: {}", res.status());
            }
        }
        let res = app.client.get(format!("{}/", app.address)).header("cookie", &b"sid=caf\xc3\xa9"[..]).send().await.unwrap();
        assert_eq!(res.status(), 200, "non-ASCII cookie is no session");
    }

    unknown_paths_are_404_and_wrong_methods_405(app) {
        assert_eq!(app.send("GET", "/nope", None).await.status(), 404);
        assert_eq!(app.send("GET", "/api/nope", None).await.status(), 404);
        let res = app.send("PUT", "/api/session", None).await;
        assert_eq!(res.status(), 405);
        assert_eq!(res.headers()["allow"], "GET, HEAD, DELETE");
        assert_eq!(app.send("GET", "/api/visits", None).await.status(), 405);
        let page = app.send("DELETE", "/", None).await;
        assert_eq!(page.status(), 405);
        assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "pages answer in HTML");
        assert_eq!(app.send("GET", "/reset", None).await.status(), 405);
    }

    a_cookie_from_another_secret_is_refused(app) {
        let other = TestApp::spawn(None, &[("SESSION_SECRET", SECRET_B)]).await;
        let (_, foreign) = other.visit(None).await;
        let (visits, fresh) = app.visit(foreign.as_deref()).await;
        assert_eq!(visits, 1);
        assert_ne!(fresh, foreign);
        other.stop().await;
    }
}

#[tokio::test]
async fn rotation_accepts_old_cookies_and_resigns_them_with_the_new_secret() {
    let redis = RedisServer::start();
    let old_app = TestApp::spawn(Some(&redis), &[("SESSION_SECRET", SECRET_A)]).await;
    let (_, old_cookie) = old_app.visit(None).await;
    let old_cookie = old_cookie.unwrap();
    old_app.stop().await;

    let rotating = TestApp::spawn(
        Some(&redis),
        &[("SESSION_SECRET", &format!("{SECRET_B},{SECRET_A}"))],
    )
    .await;
    // Issued just now, so only the older secret makes it due for re-issue.
    let (visits, resigned) = rotating.visit(Some(&old_cookie)).await;
    assert_eq!(visits, 2, "the old cookie still works");
    let resigned = resigned.expect("re-signed cookie");
    assert_ne!(resigned, old_cookie, "re-signed with the first secret");
    assert_eq!(
        cookie_id(&resigned),
        cookie_id(&old_cookie),
        "same session id"
    );
    assert_eq!(
        rotating.visit(Some(&resigned)).await,
        (3, None),
        "re-signed once, not on every touch"
    );
    rotating.stop().await;

    let new_app = TestApp::spawn(Some(&redis), &[("SESSION_SECRET", SECRET_B)]).await;
    assert_eq!(
        new_app.visit(Some(&resigned)).await.0,
        4,
        "works once only the new secret is left"
    );
    assert_eq!(
        new_app.visit(Some(&old_cookie)).await.0,
        1,
        "the old signature alone no longer does"
    );
    new_app.stop().await;
}

#[tokio::test]
async fn a_session_expires_after_its_ttl() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis), &[("SESSION_TTL_SECONDS", "1")]).await;
    let (_, cookie) = app.visit(None).await;
    let cookie = cookie.unwrap();
    assert_eq!(app.visit(Some(&cookie)).await.0, 2);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(redis.session_keys().is_empty(), "Redis expired the key");
    let (visits, fresh) = app.visit(Some(&cookie)).await;
    assert_eq!(visits, 1);
    assert_ne!(fresh.as_deref(), Some(cookie.as_str()));
    app.stop().await;
}

#[tokio::test]
async fn memory_sessions_expire_after_their_ttl_too() {
    let app = TestApp::spawn(None, &[("SESSION_TTL_SECONDS", "1")]).await;
    let (_, cookie) = app.visit(None).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(app.visit(cookie.as_deref()).await.0, 1);
    app.stop().await;
}

#[tokio::test]
async fn every_touch_slides_the_lifetime() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis), &[("SESSION_TTL_SECONDS", "2")]).await;
    let (_, cookie) = app.visit(None).await;
    let cookie = cookie.unwrap();
    // Four touches 0.8 s apart span 3.2 s, well past the 2 s lifetime; reads count as touches.
    let mut expected = 1;
    for i in 0..4 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        if i % 2 == 0 {
            expected += 1;
            let (visits, reissued) = app.visit(Some(&cookie)).await;
            assert_eq!(visits, expected, "session lost at touch {i}");
            // A TTL under 10 s has no whole tenth to wait for: every touch re-issues.
            assert!(reissued.is_some(), "no cookie at touch {i}");
        } else {
            assert_eq!(
                app.session_json(Some(&cookie)).await["visits"],
                expected,
                "session lost at read {i}"
            );
        }
    }
    let key = redis.session_keys().pop().unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query(&mut redis.conn())
        .unwrap();
    assert!(
        (1..=2).contains(&ttl),
        "TTL refreshed to the full lifetime, got {ttl}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_deleted_session_is_never_revived() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis), &[]).await;
    let (_, cookie) = app.visit(None).await;
    let cookie = cookie.unwrap();
    let key = redis.session_keys().pop().unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query(&mut redis.conn())
        .unwrap();

    assert_eq!(
        app.session_json(Some(&cookie)).await["visits"],
        0,
        "a read finds nothing"
    );
    let (visits, fresh) = app.visit(Some(&cookie)).await;
    assert_eq!(visits, 1);
    assert_ne!(fresh.as_deref(), Some(cookie.as_str()), "a new id");
    let keys = redis.session_keys();
    assert_eq!(keys.len(), 1);
    assert_ne!(keys[0], key, "the deleted key stays deleted");
    app.stop().await;
}

#[tokio::test]
async fn concurrent_increments_across_two_instances_lose_nothing() {
    let redis = RedisServer::start();
    let a = TestApp::spawn(Some(&redis), &[("HTTP_WORKERS", "2")]).await;
    let b = TestApp::spawn(Some(&redis), &[("HTTP_WORKERS", "2")]).await;
    let (_, cookie) = a.visit(None).await;
    let cookie = cookie.unwrap();

    let mut tasks = Vec::new();
    for i in 0..400 {
        let url = format!(
            "{}/api/visits",
            if i % 2 == 0 { &a.address } else { &b.address }
        );
        let (client, cookie) = (a.client.clone(), cookie.clone());
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .header("cookie", cookie)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 200);
    }
    assert_eq!(
        b.session_json(Some(&cookie)).await["visits"],
        401,
        "1 + 400 increments"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn the_count_goes_on_after_every_instance_restarts() {
    let redis = RedisServer::start();
    let first = TestApp::spawn(Some(&redis), &[]).await;
    let second = TestApp::spawn(Some(&redis), &[]).await;
    let (_, cookie) = first.visit(None).await;
    let cookie = cookie.unwrap();
    assert_eq!(second.visit(Some(&cookie)).await.0, 2);
    first.stop().await;
    second.stop().await;

    let restarted = TestApp::spawn(Some(&redis), &[]).await;
    assert_eq!(restarted.visit(Some(&cookie)).await.0, 3);
    restarted.stop().await;
}

#[tokio::test]
async fn instances_without_a_secret_share_one_kept_in_redis() {
    let redis = RedisServer::start();
    let a = TestApp::spawn(Some(&redis), &[("SESSION_SECRET", "")]).await;
    let b = TestApp::spawn(Some(&redis), &[("SESSION_SECRET", "")]).await;
    let (_, cookie) = a.visit(None).await;
    let cookie = cookie.unwrap();
    assert_eq!(b.visit(Some(&cookie)).await.0, 2, "b accepts a's cookie");
    assert_eq!(a.visit(Some(&cookie)).await.0, 3);
    assert!(redis.keys().contains(&"sess:secret".to_owned()));
    a.stop().await;
    b.stop().await;

    let later = TestApp::spawn(Some(&redis), &[("SESSION_SECRET", "")]).await;
    assert_eq!(
        later.visit(Some(&cookie)).await.0,
        4,
        "and so does an instance started later"
    );
    later.stop().await;
}

#[tokio::test]
async fn health_checks_and_reads_create_no_keys() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis), &[]).await;
    for path in ["/health", "/ready", "/api/session", "/nope"] {
        app.send("GET", path, None).await;
    }
    assert!(redis.keys().is_empty(), "keys: {:?}", redis.keys());
    app.stop().await;
}

#[tokio::test]
async fn no_redis_key_reveals_a_session_id() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis), &[]).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (_, cookie) = app.visit(None).await;
        let value = cookie.unwrap().trim_start_matches("sid=").to_owned();
        ids.push(value[..43].to_owned());
    }
    let keys = redis.keys();
    assert_eq!(keys.len(), 5);
    for key in &keys {
        assert!(
            key.starts_with("sess:") && key.len() == "sess:".len() + 22,
            "{key}"
        );
        for id in &ids {
            assert!(
                !key.contains(id.as_str()) && !key.contains(&id[..16]),
                "{key} reveals an id"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_counter_request_costs_one_redis_round_trip_and_one_small_key() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis), &[]).await;
    let (_, cookie) = app.visit(None).await;
    let cookie = cookie.unwrap();
    app.visit(Some(&cookie)).await; // loads the script into Redis's cache
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut redis.conn())
        .unwrap();
    for _ in 0..20 {
        app.visit(Some(&cookie)).await;
    }
    let stats = command_calls(redis.port());
    let calls = |cmd: &str| calls_of(&stats, cmd);
    assert_eq!(calls("evalsha"), 20, "one EVALSHA per request:\n{stats:?}");
    for other in ["get", "hgetall", "ping", "unwatch", "set", "exists", "eval"] {
        assert_eq!(calls(other), 0, "no {other} per request:\n{stats:?}");
    }
    let key = redis.session_keys().pop().unwrap();
    let bytes: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&key)
        .query(&mut redis.conn())
        .unwrap();
    assert!(bytes <= 128, "a session takes {bytes} B of Redis memory");
    app.stop().await;
}

/// The first new session of a worker is a transaction that also `DUMP`s it; every later one
/// is a `RESTORE` of that payload. Either way: one round trip, one small key, its TTL.
#[tokio::test]
async fn a_first_visit_is_one_round_trip_that_leaves_a_counted_session_with_its_ttl() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis), &[("SESSION_TTL_SECONDS", "600")]).await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut redis.conn())
        .unwrap();
    for _ in 0..10 {
        let (visits, cookie) = app.visit(None).await;
        assert_eq!(visits, 1);
        assert!(cookie.is_some(), "a first visit sets a cookie");
    }
    let stats = command_calls(redis.port());
    let calls = |cmd: &str| calls_of(&stats, cmd);
    // The test app runs one HTTP worker, so one store learns the payload.
    for (cmd, expected) in [
        ("multi", 1),
        ("hset", 1),
        ("expire", 1),
        ("dump", 1),
        ("exec", 1),
        ("restore", 9),
    ] {
        assert_eq!(
            calls(cmd),
            expected,
            "{cmd} over 10 first visits:\n{stats:?}"
        );
    }
    for other in ["exists", "hincrby", "get", "ping", "evalsha"] {
        assert_eq!(calls(other), 0, "no {other} per first visit:\n{stats:?}");
    }
    let keys = redis.session_keys();
    assert_eq!(keys.len(), 10);
    for key in &keys {
        let mut conn = redis.conn();
        let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut conn).unwrap();
        assert!((590..=600).contains(&ttl), "{key} has a TTL of {ttl}");
        let fields: Vec<(String, String)> =
            redis::cmd("HGETALL").arg(key).query(&mut conn).unwrap();
        assert_eq!(fields, [("visits".to_owned(), "1".to_owned())], "{key}");
        let bytes: i64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .query(&mut conn)
            .unwrap();
        assert!(bytes <= 128, "{key} takes {bytes} B of Redis memory");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_redis_failure_is_a_fast_503_without_internals() {
    let mut redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis), &[("REDIS_TIMEOUT_MS", "300")]).await;
    let (_, cookie) = app.visit(None).await;
    redis.kill();
    for (method, path, html) in [
        ("GET", "/", true),
        ("POST", "/api/visits", false),
        ("GET", "/api/session", false),
    ] {
        let started = std::time::Instant::now();
        let res = app.send(method, path, cookie.as_deref()).await;
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{path} took {:?}",
            started.elapsed()
        );
        assert_eq!(res.status(), 503, "{method} {path}");
        let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
        let body = res.text().await.unwrap();
        if html {
            assert!(content_type.starts_with("text/html"), "{content_type}");
        } else {
            let json: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
            assert_eq!(json["status"], 503);
        }
        for leak in [
            "Connection refused",
            "127.0.0.1",
            "redis://",
            "os error",
            "EVALSHA",
        ] {
            assert!(!body.contains(leak), "{path} leaks {leak:?}: {body}");
        }
    }
    app.stop().await;
}
