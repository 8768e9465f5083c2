//! The application started in-process on port 0, and helpers to talk to it.

use std::time::Duration;

use actix_web::dev::ServerHandle;
use redis_sessions::Application;
use redis_sessions::config::Settings;
use reqwest::header::{COOKIE, HeaderMap, SET_COOKIE};

use super::{RedisServer, SECRET_A};

/// Settings for a test app: port 0, a known secret, quick timeouts; `vars` override.
pub fn test_settings(redis: Option<&str>, vars: &[(&str, &str)]) -> Settings {
    let mut all: Vec<(String, String)> = vec![
        ("PORT".into(), "0".into()),
        // Many apps run at once; the metrics tests ask for a listener explicitly.
        ("METRICS_PORT".into(), "off".into()),
        ("SESSION_SECRET".into(), SECRET_A.into()),
        ("REDIS_TIMEOUT_MS".into(), "300".into()),
        ("HTTP_WORKERS".into(), "1".into()),
        ("SHUTDOWN_TIMEOUT_SECONDS".into(), "2".into()),
        ("COOKIE_SECURE".into(), "false".into()),
    ];
    if let Some(url) = redis {
        all.push(("REDIS_URL".into(), url.into()));
    }
    for (k, v) in vars {
        all.retain(|(key, _)| key != k);
        if !v.is_empty() {
            all.push((k.to_string(), v.to_string()));
        }
    }
    Settings::from_vars(all).expect("valid test settings")
}

/// The application running in-process on a random port.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// The bound port.
    pub port: u16,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<()>,
    /// A client that keeps no cookies: tests pass them explicitly.
    pub client: reqwest::Client,
}

impl TestApp {
    /// Starts the app against `redis` (or the memory store when `None`).
    pub async fn spawn(redis: Option<&RedisServer>, vars: &[(&str, &str)]) -> TestApp {
        Self::spawn_with(test_settings(redis.map(|r| r.url()).as_deref(), vars)).await
    }

    /// Starts the app with explicit settings.
    pub async fn spawn_with(settings: Settings) -> TestApp {
        if std::env::var_os("TEST_LOG").is_some() {
            // Leaked on purpose: the test process's logs must outlive every test.
            std::mem::forget(redis_sessions::telemetry::init(&settings.log));
        }
        let app = Application::build(settings)
            .await
            .expect("application builds");
        let port = app.port();
        let handle = app.handle();
        let task = tokio::spawn(async move {
            app.run().await.expect("server runs");
        });
        TestApp {
            address: format!("http://127.0.0.1:{port}"),
            port,
            handle,
            task,
            client: client(),
        }
    }

    /// Stops it gracefully and waits until it has.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }

    /// Sends a request with an optional raw `Cookie` header.
    pub async fn send(&self, method: &str, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .client
            .request(method, format!("{}{}", self.address, path));
        if let Some(c) = cookie {
            req = req.header(COOKIE, c);
        }
        req.send().await.expect("request completes")
    }

    /// Loads the counter page and returns (visits, session cookie set, if any).
    pub async fn visit(&self, cookie: Option<&str>) -> (i64, Option<String>) {
        let res = self.send("GET", "/", cookie).await;
        assert_eq!(res.status(), 200, "GET / failed");
        let set = session_cookie(res.headers());
        let body = res.text().await.expect("body");
        (visits_in_page(&body), set)
    }

    /// `GET /api/session`, returning the JSON body.
    pub async fn session_json(&self, cookie: Option<&str>) -> serde_json::Value {
        let res = self.send("GET", "/api/session", cookie).await;
        assert_eq!(res.status(), 200);
        res.json().await.expect("json")
    }
}

/// A plain client with short timeouts so a hung server fails the test rather than stalling it.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// The `sid=<value>` pair from a response's `Set-Cookie`, if it sets the session cookie.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("sid="))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
}

/// The session id in a `sid=<id>.…` pair: what stays the same when a cookie is re-issued.
pub fn cookie_id(cookie: &str) -> &str {
    let value = cookie.strip_prefix("sid=").unwrap_or(cookie);
    value.split('.').next().unwrap_or_default()
}

/// Every `Set-Cookie` header, for attribute checks.
pub fn set_cookie_headers(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

/// The number inside `<span id="visits">…</span>`.
pub fn visits_in_page(body: &str) -> i64 {
    let start = body
        .find(r#"<span id="visits">"#)
        .expect("page shows #visits")
        + r#"<span id="visits">"#.len();
    let end = start + body[start..].find('<').expect("closing tag");
    body[start..end].parse().expect("visits is a number")
}
