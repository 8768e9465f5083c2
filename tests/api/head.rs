//! `HEAD` on every `GET` page, for `curl -I` and uptime monitors: a GET's headers, no visit
//! counted, no session created and no cookie set.

use crate::support::{RedisServer, TestApp};

/// Every page served to `GET`.
const GET_PAGES: [&str; 5] = ["/", "/style.css", "/api/session", "/health", "/ready"];

/// Runs `check` against the Redis store and the memory store.
async fn on_both_stores<F, Fut>(check: F)
where
    F: Fn(TestApp, Option<RedisServer>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis), &[]).await;
    check(app, Some(redis)).await;
    check(TestApp::spawn(None, &[]).await, None).await;
}

#[tokio::test]
async fn head_answers_every_get_page_with_its_headers_and_no_body_or_cookie() {
    on_both_stores(|app, redis| async move {
        for path in GET_PAGES {
            let get = app.send("GET", path, None).await;
            let head = app.send("HEAD", path, None).await;
            assert_eq!(head.status(), get.status(), "HEAD {path}");
            for name in ["content-type", "cache-control"] {
                assert_eq!(
                    head.headers().get(name),
                    get.headers().get(name),
                    "HEAD {path}: {name}"
                );
            }
            assert!(head.headers().contains_key("x-request-id"), "HEAD {path}");
            assert!(
                head.headers().get("set-cookie").is_none(),
                "HEAD {path} sets no cookie"
            );
            assert!(
                head.bytes().await.unwrap().is_empty(),
                "HEAD {path}: no body"
            );
        }
        if let Some(redis) = redis {
            // The GET / above created one session; the HEADs created none.
            assert_eq!(redis.session_keys().len(), 1, "{:?}", redis.session_keys());
        }
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_head_neither_counts_nor_renews_and_a_get_afterwards_counts_on() {
    on_both_stores(|app, redis| async move {
        let (_, cookie) = app.visit(None).await;
        let cookie = cookie.unwrap();
        assert_eq!(app.visit(Some(&cookie)).await.0, 2);
        for _ in 0..3 {
            for path in ["/", "/api/session"] {
                let res = app.send("HEAD", path, Some(&cookie)).await;
                assert_eq!(res.status(), 200, "HEAD {path}");
                assert!(
                    res.headers().get("set-cookie").is_none(),
                    "HEAD {path} with a session renews no cookie"
                );
            }
        }
        assert_eq!(
            app.visit(Some(&cookie)).await.0,
            3,
            "the HEADs counted nothing"
        );
        if let Some(redis) = redis {
            assert_eq!(redis.session_keys().len(), 1);
        }
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn head_answers_503_like_get_when_redis_is_down() {
    let mut redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis), &[]).await;
    redis.kill();
    for path in ["/", "/api/session"] {
        let res = app.send("HEAD", path, None).await;
        assert_eq!(res.status(), 503, "HEAD {path}: monitors see the outage");
        assert_eq!(res.headers()["retry-after"], "1", "HEAD {path}");
    }
    assert_eq!(app.send("HEAD", "/health", None).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn the_allow_header_of_a_405_lists_head() {
    let app = TestApp::spawn(None, &[]).await;
    for (path, allow) in [
        ("/", "GET, HEAD"),
        ("/api/session", "GET, HEAD, DELETE"),
        ("/health", "GET, HEAD"),
        ("/ready", "GET, HEAD"),
    ] {
        let res = app.send("PUT", path, None).await;
        assert_eq!(res.status(), 405, "PUT {path}");
        assert_eq!(res.headers()["allow"], allow, "PUT {path}");
    }
    app.stop().await;
}
