//! The Prometheus endpoint, read with a real text-format parser.
//!
//! The recorder is process-wide, so these tests run the real binary: each gets a process,
//! and so counts, of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use prometheus_parse::{Scrape, Value};

use crate::support::{BinaryApp, RedisServer, SECRET_A, client, free_port, session_cookie};

/// The binary with its own metrics port, against `redis` or the memory store.
fn start(redis: Option<&RedisServer>) -> (BinaryApp, u16) {
    let metrics_port = free_port();
    let port = metrics_port.to_string();
    let url = redis.map(RedisServer::url);
    let mut vars = vec![
        ("METRICS_PORT", port.as_str()),
        ("SESSION_SECRET", SECRET_A),
        ("REDIS_TIMEOUT_MS", "300"),
        ("HTTP_WORKERS", "1"),
    ];
    if let Some(url) = url.as_deref() {
        vars.push(("REDIS_URL", url));
    }
    (BinaryApp::start(&vars), metrics_port)
}

/// One parsed scrape.
struct Metrics(Scrape);

impl Metrics {
    async fn scrape(metrics_port: u16) -> Metrics {
        let res = client()
            .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
            .send()
            .await
            .expect("scrape");
        assert_eq!(res.status(), 200);
        let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        let text = res.text().await.expect("body");
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        Metrics(Scrape::parse(lines).expect("valid Prometheus text format"))
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a prometheus_parse::Sample> + 'a {
        self.0.samples.iter().filter(move |s| {
            s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
    }

    /// Observations of a histogram (its `+Inf` bucket), summed over matching series.
    fn observations(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels)
            .map(|s| match &s.value {
                Value::Histogram(buckets) => {
                    let last = buckets.last().expect("a histogram has buckets");
                    assert!(last.less_than.is_infinite(), "{name}: last bucket is +Inf");
                    last.count
                }
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .sum()
    }

    /// A counter or gauge, summed over matching series; 0 if none.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels)
            .map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                ref other => panic!("{name} is not a counter or gauge: {other:?}"),
            })
            .sum()
    }

    /// Every series as `name{k="v",…}`, labels sorted.
    fn series(&self) -> BTreeSet<String> {
        self.0
            .samples
            .iter()
            .map(|s| {
                let labels: BTreeMap<&String, &String> = s.labels.iter().collect();
                format!("{}{labels:?}", s.metric)
            })
            .collect()
    }

    /// Requests per (method, route, status).
    fn requests(&self) -> BTreeMap<(String, String, String), f64> {
        let mut all = BTreeMap::new();
        for s in self.matching("http_server_request_duration_seconds", &[]) {
            let key = |k: &str| s.labels.get(k).expect("label present").to_owned();
            let key = (
                key("http_request_method"),
                key("http_route"),
                key("http_response_status_code"),
            );
            let count = self.observations(
                "http_server_request_duration_seconds",
                &[
                    ("http_request_method", &key.0),
                    ("http_route", &key.1),
                    ("http_response_status_code", &key.2),
                ],
            );
            all.insert(key, count);
        }
        all
    }
}

fn request_key(method: &str, route: &str, status: u16) -> (String, String, String) {
    (method.to_owned(), route.to_owned(), status.to_string())
}

#[tokio::test]
async fn request_counts_equal_what_was_sent_per_route_method_and_status() {
    let redis = RedisServer::start();
    let (app, metrics_port) = start(Some(&redis));
    let http = client();
    let at = |path: &str| format!("{}{path}", app.address());

    let first = http.get(at("/")).send().await.unwrap();
    let cookie = session_cookie(first.headers()).expect("a session cookie");
    for _ in 0..4 {
        let res = http.get(at("/")).header("cookie", &cookie).send().await;
        assert_eq!(res.unwrap().status(), 200);
    }
    for _ in 0..3 {
        let res = http.post(at("/api/visits")).send().await.unwrap();
        assert_eq!(res.status(), 200, "each creates a session");
    }
    for _ in 0..2 {
        let res = http
            .get(at("/api/session"))
            .header("cookie", &cookie)
            .send()
            .await;
        assert_eq!(res.unwrap().status(), 200);
    }
    let res = http
        .delete(at("/api/session"))
        .header("cookie", &cookie)
        .send()
        .await;
    assert_eq!(res.unwrap().status(), 204);
    for path in ["/nope", "/api/nope", "/api/visits/1", "/.env"] {
        assert_eq!(http.get(at(path)).send().await.unwrap().status(), 404);
    }
    for _ in 0..2 {
        assert_eq!(http.put(at("/")).send().await.unwrap().status(), 405);
    }
    for _ in 0..3 {
        assert_eq!(http.get(at("/health")).send().await.unwrap().status(), 200);
    }
    // The metrics live on their own port only.
    assert_eq!(http.get(at("/metrics")).send().await.unwrap().status(), 404);

    let metrics = Metrics::scrape(metrics_port).await;
    let expected: BTreeMap<_, _> = [
        (request_key("GET", "/", 200), 5.0),
        (request_key("POST", "/api/visits", 200), 3.0),
        (request_key("GET", "/api/session", 200), 2.0),
        (request_key("DELETE", "/api/session", 204), 1.0),
        (request_key("GET", "unmatched", 404), 5.0),
        (request_key("PUT", "/", 405), 2.0),
        (request_key("GET", "/health", 200), 3.0),
    ]
    .into_iter()
    .collect();
    assert_eq!(metrics.requests(), expected);

    assert_eq!(
        metrics.value("redis_sessions_sessions_created_total", &[]),
        4.0
    );
    assert_eq!(
        metrics.value("redis_sessions_sessions_ended_total", &[]),
        1.0
    );
    // Every counter update, read and delete is one Redis operation, and none failed.
    let ok = |op| {
        metrics.observations(
            "redis_sessions_redis_operation_duration_seconds",
            &[("operation", op), ("outcome", "ok")],
        )
    };
    assert_eq!(ok("apply"), 8.0, "5 page loads and 3 API visits");
    assert_eq!(ok("load"), 2.0, "2 reads of an existing session");
    assert_eq!(ok("delete"), 1.0);
    assert_eq!(
        metrics.observations("redis_sessions_redis_operation_duration_seconds", &[]),
        11.0,
        "no failed operation"
    );
    assert_eq!(
        metrics.observations("redis_sessions_redis_pool_wait_duration_seconds", &[]),
        11.0,
        "one checkout per operation"
    );
    assert!(metrics.value("redis_sessions_redis_connections_opened_total", &[]) >= 1.0);
    assert!(metrics.value("redis_sessions_redis_pool_connections", &[]) >= 1.0);
    assert!(metrics.value("redis_sessions_redis_pool_connections_max", &[]) >= 1.0);
}

#[tokio::test]
async fn build_info_and_process_metrics_are_exported() {
    let (app, metrics_port) = start(None);
    let metrics = Metrics::scrape(metrics_port).await;
    let info = [
        ("version", env!("CARGO_PKG_VERSION")),
        ("store", "memory"),
        ("topology", "in-process"),
    ];
    assert_eq!(metrics.value("redis_sessions_build_info", &info), 1.0);
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "process_threads",
    ] {
        assert!(metrics.value(name, &[]) > 0.0, "{name} is exported");
    }
    assert_eq!(
        metrics.matching("process_cpu_seconds_total", &[]).count(),
        1,
        "CPU seconds are exported"
    );
    drop(app);
}

#[tokio::test]
async fn bad_cookies_are_counted_by_reason() {
    let (app, metrics_port) = start(None);
    let http = client();
    let send = |cookie: String| {
        let req = http
            .get(format!("{}/", app.address()))
            .header("cookie", cookie);
        async move { assert_eq!(req.send().await.unwrap().status(), 200) }
    };
    let first = http
        .get(format!("{}/", app.address()))
        .send()
        .await
        .unwrap();
    let good = session_cookie(first.headers()).unwrap();
    let value = good.trim_start_matches("sid=").to_owned();
    let id = &value[..43];
    send(format!("sid={id}")).await;
    // The MAC's first character carries 6 significant bits (its last one only 4).
    let mac_at = value.rfind('.').unwrap() + 1;
    let mut tampered = value.clone().into_bytes();
    tampered[mac_at] = if tampered[mac_at] == b'A' { b'B' } else { b'A' };
    send(format!("sid={}", String::from_utf8(tampered).unwrap())).await;
    send(format!("sid={id}.{}", "A".repeat(43))).await;
    send(format!("{good}; sid={value}")).await;
    send(format!("sid={}", "x".repeat(200))).await;

    let metrics = Metrics::scrape(metrics_port).await;
    let reason = |r| metrics.value("redis_sessions_bad_cookies_total", &[("reason", r)]);
    assert_eq!(reason("malformed"), 1.0, "unsigned");
    assert_eq!(
        reason("bad_signature"),
        2.0,
        "tampered, and signed by another secret"
    );
    assert_eq!(reason("duplicate"), 1.0);
    assert_eq!(reason("oversized"), 1.0);
    assert_eq!(metrics.value("redis_sessions_bad_cookies_total", &[]), 5.0);
    assert_eq!(
        metrics.value("redis_sessions_sessions_created_total", &[]),
        6.0,
        "every request without a usable cookie started a session"
    );
}

#[tokio::test]
async fn a_scan_of_a_thousand_random_paths_adds_no_series() {
    let (app, metrics_port) = start(None);
    let http = client();
    // One unknown path first, so the single "unmatched" series exists before the scan.
    let res = http
        .get(format!("{}/first-miss", app.address()))
        .send()
        .await;
    assert_eq!(res.unwrap().status(), 404);
    let before = Metrics::scrape(metrics_port).await;

    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ u64::from(metrics_port);
    let mut next = move || {
        // xorshift: random enough to make every path different, no dependency needed.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..1000 {
        let path = format!("/{:x}/{}?q={:x}", next(), i, next());
        let res = http.get(format!("{}{path}", app.address())).send().await;
        assert_eq!(res.unwrap().status(), 404, "{path}");
    }
    let after = Metrics::scrape(metrics_port).await;

    let added: Vec<String> = after
        .series()
        .difference(&before.series())
        .cloned()
        .collect();
    assert!(added.is_empty(), "the scan added series: {added:?}");
    let unmatched = |m: &Metrics| {
        m.observations(
            "http_server_request_duration_seconds",
            &[
                ("http_route", "unmatched"),
                ("http_response_status_code", "404"),
            ],
        )
    };
    assert_eq!(unmatched(&before), 1.0);
    assert_eq!(unmatched(&after), 1001.0);
}

#[tokio::test]
async fn a_redis_outage_shows_as_503s_and_failed_operations() {
    let mut redis = RedisServer::start();
    let (app, metrics_port) = start(Some(&redis));
    let http = client();
    let page = format!("{}/", app.address());
    assert_eq!(http.get(&page).send().await.unwrap().status(), 200);

    redis.kill();
    for _ in 0..5 {
        assert_eq!(http.get(&page).send().await.unwrap().status(), 503);
    }
    let ready = http.get(format!("{}/ready", app.address())).send().await;
    assert_eq!(ready.unwrap().status(), 503);

    let metrics = Metrics::scrape(metrics_port).await;
    let requests = metrics.requests();
    assert_eq!(requests.get(&request_key("GET", "/", 200)), Some(&1.0));
    assert_eq!(requests.get(&request_key("GET", "/", 503)), Some(&5.0));
    assert_eq!(requests.get(&request_key("GET", "/ready", 503)), Some(&1.0));

    let apply = |outcome| {
        metrics.observations(
            "redis_sessions_redis_operation_duration_seconds",
            &[("operation", "apply"), ("outcome", outcome)],
        )
    };
    assert_eq!(apply("ok"), 1.0);
    let failed = apply("refused") + apply("connection") + apply("timeout");
    assert_eq!(failed, 5.0, "every failed page load is one failed apply");
    assert!(
        apply("refused") >= 1.0,
        "a stopped Redis refuses connections"
    );
    let ping = metrics.observations(
        "redis_sessions_redis_operation_duration_seconds",
        &[("operation", "ping")],
    );
    assert_eq!(ping, 1.0);
    assert!(
        metrics.value("redis_sessions_redis_pool_resets_total", &[]) >= 1.0,
        "the dropped connection retired its pool"
    );
}

#[test]
fn sigterm_stops_the_metrics_listener_with_the_application() {
    let (mut app, metrics_port) = start(None);
    assert!(std::net::TcpStream::connect(("127.0.0.1", metrics_port)).is_ok());
    let status = app.terminate(Duration::from_secs(5));
    assert!(status.success(), "exit status {status:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", metrics_port)).is_err(),
        "the metrics port is closed"
    );
}

#[tokio::test]
async fn a_full_redis_shows_as_oom_outcomes() {
    let redis = RedisServer::start();
    let (app, metrics_port) = start(Some(&redis));
    let http = client();
    let page = format!("{}/", app.address());
    assert_eq!(http.get(&page).send().await.unwrap().status(), 200);

    // Any limit below what Redis already uses makes every write an OOM error reply.
    let _: () = deadpool_redis::redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query(&mut redis.conn())
        .expect("CONFIG SET maxmemory");
    for _ in 0..3 {
        assert_eq!(http.get(&page).send().await.unwrap().status(), 503);
    }

    let metrics = Metrics::scrape(metrics_port).await;
    let apply = |outcome| {
        metrics.observations(
            "redis_sessions_redis_operation_duration_seconds",
            &[("operation", "apply"), ("outcome", outcome)],
        )
    };
    assert_eq!(apply("ok"), 1.0);
    assert_eq!(apply("oom"), 3.0);
    let requests = metrics.requests();
    assert_eq!(requests.get(&request_key("GET", "/", 503)), Some(&3.0));
    assert_eq!(
        metrics.value("redis_sessions_redis_pool_resets_total", &[]),
        0.0,
        "an error reply leaves the connection in use"
    );
}

#[tokio::test]
async fn a_session_found_gone_is_counted_as_expired() {
    let redis = RedisServer::start();
    let (app, metrics_port) = start(Some(&redis));
    let http = client();
    let at = |path: &str| format!("{}{path}", app.address());
    let first = http.get(at("/")).send().await.unwrap();
    let cookie = session_cookie(first.headers()).expect("a session cookie");

    // What expiry does, without waiting for it: the key is gone while the cookie lives on.
    let keys = redis.session_keys();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let _: () = deadpool_redis::redis::cmd("DEL")
        .arg(&keys[0])
        .query(&mut redis.conn())
        .expect("DEL");
    let read = http
        .get(at("/api/session"))
        .header("cookie", &cookie)
        .send()
        .await;
    assert_eq!(read.unwrap().status(), 200);
    let again = http.get(at("/")).header("cookie", &cookie).send().await;
    assert_eq!(again.unwrap().status(), 200);

    let metrics = Metrics::scrape(metrics_port).await;
    assert_eq!(
        metrics.value("redis_sessions_sessions_expired_total", &[]),
        2.0,
        "the read and the counter update each found it gone"
    );
    assert_eq!(
        metrics.value("redis_sessions_sessions_created_total", &[]),
        2.0
    );
    assert_eq!(
        metrics.value("redis_sessions_sessions_ended_total", &[]),
        0.0
    );
}
