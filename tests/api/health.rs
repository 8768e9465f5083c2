//! Liveness and readiness, with Redis up, down and arriving late.

use std::time::{Duration, Instant};

use crate::support::{RedisServer, TestApp, free_port};

#[tokio::test]
async fn health_is_up_and_sets_no_cookie_even_with_redis_down() {
    let mut redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis), &[]).await;
    redis.kill();

    let res = app.send("GET", "/health", None).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers().get("set-cookie").is_none(),
        "liveness must not set a cookie"
    );
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "UP"}));
    app.stop().await;
}

#[tokio::test]
async fn ready_reports_redis_up_with_its_latency() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis), &[]).await;

    let res = app.send("GET", "/ready", None).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("set-cookie").is_none());
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "UP");
    assert_eq!(body["checks"]["redis"]["status"], "UP");
    assert!(body["checks"]["redis"]["latency_ms"].is_number(), "{body}");
    assert!(redis.keys().is_empty(), "readiness must not create keys");
    app.stop().await;
}

#[tokio::test]
async fn ready_is_always_up_with_the_memory_store() {
    let app = TestApp::spawn(None, &[]).await;
    let body: serde_json::Value = app.send("GET", "/ready", None).await.json().await.unwrap();
    assert_eq!(body["status"], "UP");
    assert_eq!(body["checks"]["memory"]["status"], "UP");
    app.stop().await;
}

#[tokio::test]
async fn ready_turns_down_when_redis_dies_and_up_when_it_returns() {
    let mut redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis), &[]).await;
    assert_eq!(app.send("GET", "/ready", None).await.status(), 200);

    redis.kill();
    let started = Instant::now();
    let res = app.send("GET", "/ready", None).await;
    assert_eq!(res.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "readiness must fail fast"
    );
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "DOWN");
    assert_eq!(body["checks"]["redis"]["status"], "DOWN");
    assert!(body["checks"]["redis"]["reason"].is_string());

    redis.start_again();
    wait_until_ready(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn the_service_starts_with_redis_down_and_recovers_when_it_appears() {
    let port = free_port();
    let app = TestApp::spawn_with(crate::support::test_settings(
        Some(&format!("redis://127.0.0.1:{port}")),
        &[],
    ))
    .await;

    assert_eq!(app.send("GET", "/health", None).await.status(), 200);
    assert_eq!(app.send("GET", "/ready", None).await.status(), 503);
    let started = Instant::now();
    let page = app.send("GET", "/", None).await;
    assert_eq!(page.status(), 503, "pages need Redis");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "and fail fast without it"
    );

    let _redis = RedisServer::start_on(port, &["--save", "", "--appendonly", "no"]);
    wait_until_ready(&app).await;
    let (visits, cookie) = app.visit(None).await;
    assert_eq!(visits, 1);
    assert!(cookie.is_some());
    app.stop().await;
}

/// Polls /ready for up to 10 s: recovery must need no restart.
pub async fn wait_until_ready(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if app.send("GET", "/ready", None).await.status() == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the service did not recover within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
