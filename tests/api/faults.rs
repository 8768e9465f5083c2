//! Redis faults against a live app: killed, restarted, stalled and persisted.

use std::time::{Duration, Instant};

use crate::health::wait_until_ready;
use crate::support::{RedisServer, TestApp};

/// REDIS_TIMEOUT_MS for these tests, and the slack allowed on top of it.
const TIMEOUT_MS: u64 = 300;
const MARGIN: Duration = Duration::from_millis(700);

#[tokio::test]
async fn killed_redis_gives_fast_503s_and_the_service_recovers_when_it_returns() {
    let mut redis = RedisServer::start();
    let app = TestApp::spawn(
        Some(&redis),
        &[("REDIS_TIMEOUT_MS", &TIMEOUT_MS.to_string())],
    )
    .await;
    let (_, cookie) = app.visit(None).await;
    let cookie = cookie.unwrap();
    assert_eq!(app.visit(Some(&cookie)).await.0, 2);

    redis.kill();
    for _ in 0..10 {
        let started = Instant::now();
        let res = app.send("POST", "/api/visits", Some(&cookie)).await;
        assert_eq!(res.status(), 503);
        assert!(
            started.elapsed() < Duration::from_millis(TIMEOUT_MS) + MARGIN,
            "took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        app.send("GET", "/health", None).await.status(),
        200,
        "liveness is unaffected"
    );

    redis.start_again();
    let recovered = Instant::now();
    wait_until_ready(&app).await;
    // The data died with the non-persistent Redis: a fresh session, served without restarting the app.
    let (visits, _) = app.visit(Some(&cookie)).await;
    assert_eq!(visits, 1);
    assert!(
        recovered.elapsed() < Duration::from_secs(5),
        "recovered in {:?}",
        recovered.elapsed()
    );
    app.stop().await;
}

#[tokio::test]
async fn stalled_redis_gives_503s_within_the_deadline_and_the_session_survives() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(
        Some(&redis),
        &[
            ("REDIS_TIMEOUT_MS", &TIMEOUT_MS.to_string()),
            ("HTTP_WORKERS", "2"),
        ],
    )
    .await;
    let (_, cookie) = app.visit(None).await;
    let cookie = cookie.unwrap();
    assert_eq!(app.visit(Some(&cookie)).await.0, 2);

    redis.pause();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (client, url, cookie) = (
            app.client.clone(),
            format!(
                "{}/{}",
                app.address,
                if i % 2 == 0 { "" } else { "api/session" }
            ),
            cookie.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let status = client
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .map(|r| r.status().as_u16());
            (status, started.elapsed())
        }));
    }
    let health_started = Instant::now();
    assert_eq!(app.send("GET", "/health", None).await.status(), 200);
    assert!(
        health_started.elapsed() < Duration::from_millis(200),
        "/health stays fast: {:?}",
        health_started.elapsed()
    );
    for t in tasks {
        let (status, took) = t.await.unwrap();
        assert_eq!(status.unwrap(), 503);
        assert!(
            took < Duration::from_millis(TIMEOUT_MS) + MARGIN,
            "a stalled request took {took:?}"
        );
    }

    redis.resume();
    wait_until_ready(&app).await;
    // The ten stalled page loads were already written to Redis's socket when they timed out,
    // so Redis may still apply them on SIGCONT: a 503 means "unknown", not "not counted".
    let visits = app.visit(Some(&cookie)).await.0;
    assert!(
        (3..=13).contains(&visits),
        "the same session counts on, got {visits}"
    );
    app.stop().await;
}

#[tokio::test]
async fn sessions_survive_a_redis_restart_with_aof_persistence() {
    let mut redis = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]);
    let app = TestApp::spawn(Some(&redis), &[]).await;
    let (_, cookie) = app.visit(None).await;
    let cookie = cookie.unwrap();
    assert_eq!(app.visit(Some(&cookie)).await.0, 2);

    redis.terminate();
    redis.start_again();
    wait_until_ready(&app).await;
    assert_eq!(app.visit(Some(&cookie)).await.0, 3);
    app.stop().await;
}

#[tokio::test]
async fn traffic_through_a_redis_restart_never_hangs_and_recovers() {
    let mut redis = RedisServer::start_with(&["--save", "", "--appendonly", "yes"]);
    let app = TestApp::spawn(
        Some(&redis),
        &[
            ("REDIS_TIMEOUT_MS", &TIMEOUT_MS.to_string()),
            ("HTTP_WORKERS", "2"),
        ],
    )
    .await;
    let (_, cookie) = app.visit(None).await;
    let cookie = cookie.unwrap();

    // Clients keep hammering while Redis dies and comes back.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (client, url, cookie, stop) = (
            app.client.clone(),
            format!("{}/api/visits", app.address),
            cookie.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let (mut ok, mut unavailable, mut slowest) = (0u32, 0u32, Duration::ZERO);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                match client
                    .post(&url)
                    .header("cookie", &cookie)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                {
                    Ok(200) => ok += 1,
                    Ok(503) => unavailable += 1,
                    other => panic!("unexpected answer {other:?}"),
                }
                slowest = slowest.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, unavailable, slowest)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.start_again();
    wait_until_ready(&app).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let (mut ok, mut unavailable) = (0, 0);
    for c in clients {
        let (o, u, slowest) = c.await.unwrap();
        ok += o;
        unavailable += u;
        assert!(
            slowest < Duration::from_millis(TIMEOUT_MS) + MARGIN,
            "a request took {slowest:?}"
        );
    }
    assert!(unavailable > 0, "the outage was seen");
    assert!(ok > 0, "requests succeeded around it");
    let after = app.session_json(Some(&cookie)).await["visits"]
        .as_i64()
        .unwrap();
    assert!(after > 0, "the session counts on after the restart");
    app.stop().await;
}

#[tokio::test]
async fn the_first_request_after_a_redis_restart_succeeds() {
    let mut redis = RedisServer::start_with(&["--save", "", "--appendonly", "yes"]);
    let app = TestApp::spawn(Some(&redis), &[]).await;
    let (_, cookie) = app.visit(None).await;
    let cookie = cookie.unwrap();
    assert_eq!(app.visit(Some(&cookie)).await.0, 2);

    // The pooled connection dies with the old process; the pool finds out before the
    // counter command is sent, so it goes out on a fresh connection.
    redis.terminate();
    redis.start_again();
    // Past the idle threshold, the pool checks the connection before handing it out.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let res = app.send("GET", "/", Some(&cookie)).await;
    assert_eq!(
        res.status(),
        200,
        "no 503 for a connection that died while idle"
    );
    assert_eq!(
        crate::support::visits_in_page(&res.text().await.unwrap()),
        3
    );
    app.stop().await;
}
