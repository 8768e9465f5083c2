//! Credentials as brokers write them, against real `redis-server` processes: placeholder user
//! names beside a password field (GOV.UK PaaS, SAP BTP) and real ACL users.

use std::time::Duration;

use deadpool_redis::redis;

use crate::support::{BinaryApp, RedisServer, SECRET_A, TestApp, client, session_cookie};

const PASSWORD: &str = "requirepass-only-password";

/// A Redis that knows only the default user, protected by `requirepass`.
fn requirepass_redis() -> RedisServer {
    RedisServer::start_with(&["--save", "", "--requirepass", PASSWORD])
}

/// A Redis with an ACL user `app` and a default user with a different password.
fn acl_redis() -> RedisServer {
    let redis = requirepass_redis();
    let mut admin = redis::Client::open(format!("redis://:{PASSWORD}@127.0.0.1:{}", redis.port()))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .expect("admin connection");
    let () = redis::cmd("ACL")
        .arg(&["SETUSER", "app", "on", ">app-password", "~sess:*", "+@all"])
        .query(&mut admin)
        .unwrap();
    redis
}

/// `VCAP_SERVICES` with one binding of these credentials (a JSON object's members).
fn vcap(label: &str, credentials: &str) -> String {
    format!(
        r#"{{"{label}":[{{"label":"{label}","name":"sessions","credentials":{{{credentials}}}}}]}}"#
    )
}

/// Starts the app on this binding and checks that two visits count 1 then 2.
async fn counts_through(services: &str) {
    let app = TestApp::spawn_with(crate::support::test_settings(
        None,
        &[("VCAP_SERVICES", services)],
    ))
    .await;
    let (first, cookie) = app.visit(None).await;
    assert_eq!(first, 1, "{services}");
    assert_eq!(app.visit(cookie.as_deref()).await.0, 2, "{services}");
    assert_eq!(app.send("GET", "/ready", None).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_govuk_elasticache_binding_works_against_requirepass_without_acl_users() {
    let redis = requirepass_redis();
    let port = redis.port();
    counts_through(&vcap(
        "redis",
        &format!(
            r#""host":"127.0.0.1","port":{port},"name":"cf-abc123","password":"{PASSWORD}",
            "uri":"redis://x:{PASSWORD}@127.0.0.1:{port}","tls_enabled":false"#
        ),
    ))
    .await;
}

#[tokio::test]
async fn a_sap_redis_cache_binding_works_against_requirepass_without_acl_users() {
    let redis = requirepass_redis();
    let port = redis.port();
    counts_through(&vcap(
        "redis-cache",
        &format!(
            r#""cluster_mode":false,"hostname":"127.0.0.1","port":{port},"password":"{PASSWORD}",
            "tls":false,"uri":"redis://no-user-name-for-redis:{PASSWORD}@127.0.0.1:{port}""#
        ),
    ))
    .await;
}

#[tokio::test]
async fn an_acl_user_given_in_a_username_field_is_used() {
    let redis = acl_redis();
    let port = redis.port();
    counts_through(&vcap(
        "user-provided",
        &format!(
            r#""host":"127.0.0.1","port":{port},"username":"app","password":"app-password",
            "uri":"redis://x:app-password@127.0.0.1:{port}""#
        ),
    ))
    .await;
}

#[tokio::test]
async fn an_acl_user_in_a_uri_that_is_the_only_source_of_credentials_is_used() {
    let redis = acl_redis();
    let port = redis.port();
    counts_through(&vcap(
        "user-provided",
        &format!(r#""uri":"redis://app:app-password@127.0.0.1:{port}""#),
    ))
    .await;
    // REDIS_URL reads the same way.
    let app = TestApp::spawn_with(crate::support::test_settings(
        Some(&format!("redis://app:app-password@127.0.0.1:{port}")),
        &[],
    ))
    .await;
    assert_eq!(app.visit(None).await.0, 1);
    app.stop().await;
}

#[tokio::test]
async fn an_acl_user_in_the_uri_beside_a_password_field_is_tried_when_the_password_alone_is_refused()
 {
    let redis = acl_redis();
    let port = redis.port();
    let services = vcap(
        "user-provided",
        &format!(
            r#""host":"127.0.0.1","port":{port},"password":"app-password",
            "uri":"redis://app:app-password@127.0.0.1:{port}""#
        ),
    );
    let mut app = BinaryApp::start(&[
        ("VCAP_SERVICES", &services),
        ("SESSION_SECRET", SECRET_A),
        ("LOG_FORMAT", "json"),
        ("HTTP_WORKERS", "2"),
    ]);
    let http = client();
    let mut cookie: Option<String> = None;
    for expected in 1..=6 {
        let mut req = http.post(format!("{}/api/visits", app.address()));
        if let Some(c) = &cookie {
            req = req.header("cookie", c);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200, "visit {expected}");
        cookie = cookie.or_else(|| session_cookie(res.headers()));
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["visits"], expected);
    }
    assert!(app.terminate(Duration::from_secs(5)).success());
    let logs = app.stdout();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("authenticated as the user named in its uri"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one WARN per process, not per worker or connection:\n{logs}"
    );
    assert!(warnings[0].contains(r#""level":"WARN""#), "{}", warnings[0]);
    assert!(
        warnings[0].contains(r#""redis.user":"app""#),
        "{}",
        warnings[0]
    );
    assert!(!logs.contains("app-password"), "no password in the log");
}

#[tokio::test]
async fn a_wrong_password_in_the_placeholder_shape_is_still_refused() {
    let redis = requirepass_redis();
    let port = redis.port();
    let app = TestApp::spawn_with(crate::support::test_settings(
        None,
        &[(
            "VCAP_SERVICES",
            &vcap(
                "redis",
                &format!(
                    r#""host":"127.0.0.1","port":{port},"password":"wrong",
                    "uri":"redis://x:wrong@127.0.0.1:{port}""#
                ),
            ),
        )],
    ))
    .await;
    let res = app.send("GET", "/", None).await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = app.send("GET", "/ready", None).await.json().await.unwrap();
    assert_eq!(body["checks"]["redis"]["kind"], "auth", "{body}");
    app.stop().await;
}
