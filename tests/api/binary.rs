//! The real binary: exit codes and messages for bad configuration, logs, and signals.

use std::time::{Duration, Instant};

use crate::support::{
    BinaryApp, RedisServer, SECRET_A, client, fixture, run_binary_expecting_exit, session_cookie,
};

#[test]
fn each_bad_configuration_exits_non_zero_with_one_line_naming_the_variable() {
    let short_secret = format!("{SECRET_A},too-short");
    let (app, two_redis) = (
        fixture("vcap-application.json"),
        fixture("ambiguous-two-p-redis.json"),
    );
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("PORT", "http")], "PORT"),
        (
            &[("VCAP_SERVICES", "{oops")],
            "VCAP_SERVICES is not valid JSON",
        ),
        (
            &[("VCAP_APPLICATION", "nope")],
            "VCAP_APPLICATION is not valid JSON",
        ),
        (
            &[("REDIS_URL", "mysql://h:3306")],
            "REDIS_URL must be a redis:// or rediss:// URL",
        ),
        (
            &[("SESSION_SECRET", &short_secret)],
            "SESSION_SECRET part 2",
        ),
        (
            &[("SESSION_STORE", "redis")],
            "SESSION_STORE=redis but no Redis",
        ),
        (&[("VCAP_APPLICATION", &app)], "cf create-service"),
        (
            &[("VCAP_SERVICES", &two_redis)],
            "\"redis\", \"another-redis\"",
        ),
        (
            &[
                ("VCAP_SERVICES", &two_redis),
                ("REDIS_SERVICE_NAME", "ghost"),
            ],
            "REDIS_SERVICE_NAME=\"ghost\"",
        ),
    ];
    for (vars, expected) in cases {
        let (code, stderr) = run_binary_expecting_exit(vars);
        assert_eq!(code, Some(1), "{vars:?}: exit code (stderr: {stderr})");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{vars:?}: expected one line, got {stderr:?}"
        );
        assert!(
            lines[0].contains(expected),
            "{vars:?}: expected {expected:?} in {:?}",
            lines[0]
        );
        assert!(!stderr.contains("panicked"), "{vars:?}: {stderr}");
    }
}

#[test]
fn the_cloud_foundry_message_says_how_to_bind_redis_or_use_memory() {
    let app = fixture("vcap-application.json");
    let (_, stderr) = run_binary_expecting_exit(&[("VCAP_APPLICATION", &app)]);
    assert!(stderr.contains("cf bind-service"), "{stderr}");
    assert!(stderr.contains("SESSION_STORE=memory"), "{stderr}");
}

#[test]
fn a_port_in_use_is_a_clean_error_naming_port() {
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, stderr) = run_binary_expecting_exit(&[("PORT", &port)]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("PORT") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn a_metrics_port_in_use_is_a_clean_error_naming_metrics_port() {
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, stderr) = run_binary_expecting_exit(&[("PORT", "0"), ("METRICS_PORT", &port)]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("0.0.0.0:{port} (METRICS_PORT"))
            && stderr.contains("off")
            && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[tokio::test]
async fn json_logs_name_the_binding_and_never_contain_secrets() {
    let redis = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--requirepass",
        "s3cr3t-redis-pass",
    ]);
    let services = format!(
        r#"{{"p.redis":[{{"label":"p.redis","name":"my-sessions","tags":["redis"],
        "credentials":{{"host":"127.0.0.1","port":{},"password":"s3cr3t-redis-pass"}}}}]}}"#,
        redis.port()
    );
    let vcap_application = fixture("vcap-application.json");
    let mut app = BinaryApp::start(&[
        ("VCAP_APPLICATION", &vcap_application),
        ("VCAP_SERVICES", &services),
        ("SESSION_SECRET", SECRET_A),
        ("COOKIE_SECURE", "false"),
    ]);
    let http = client();
    let res = http
        .get(format!("{}/", app.address()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cookie = session_cookie(res.headers()).expect("cookie");
    let res = http
        .get(format!("{}/", app.address()))
        .header("cookie", &cookie)
        .header("x-vcap-request-id", "router-id-1234")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["x-request-id"],
        "router-id-1234",
        "the router's id is echoed"
    );
    let status = app.terminate(Duration::from_secs(5));
    assert!(status.success(), "{status:?}");

    let logs = app.stdout();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let binding = lines
        .iter()
        .find(|l| l["binding.name"] == "my-sessions")
        .unwrap_or_else(|| panic!("no start-up line names the binding:\n{logs}"));
    assert_eq!(binding["binding.label"], "p.redis");
    assert_eq!(binding["redis.host"], "127.0.0.1");
    assert_eq!(binding["redis.port"], redis.port());
    assert_eq!(binding["redis.tls"], false);
    let request = lines
        .iter()
        .find(|l| l["request_id"] == "router-id-1234")
        .unwrap_or_else(|| panic!("no request line carries the router's id:\n{logs}"));
    assert_eq!(request["method"], "GET");
    assert_eq!(request["path"], "/");
    assert_eq!(request["status"], 200);
    assert!(request["duration_ms"].is_number());

    let cookie_value = cookie.trim_start_matches("sid=");
    for secret in [
        "s3cr3t-redis-pass",
        SECRET_A,
        cookie_value,
        &cookie_value[..43],
    ] {
        assert!(
            !logs.contains(secret),
            "the log contains a secret: {secret}"
        );
    }
}

/// Worker threads batch their log lines; a line must still show up promptly, not only when
/// a batch fills or the process exits.
#[tokio::test]
async fn an_access_line_is_written_within_a_second_of_its_request() {
    let mut app = BinaryApp::start(&[("SESSION_SECRET", SECRET_A), ("LOG_FORMAT", "json")]);
    let res = client()
        .get(format!("{}/", app.address()))
        .header("x-request-id", "prompt-line-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let sent = std::time::Instant::now();
    while !app.stdout().contains("prompt-line-1") {
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "no access line a second after the request:\n{}",
            app.stdout()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(app.terminate(Duration::from_secs(5)).success());
}

/// A line logged while a request is served carries that request's span, as its access line
/// does, and only that request's: lines logged outside requests carry none.
#[tokio::test]
async fn a_warning_logged_while_serving_a_request_names_that_request_only() {
    let mut app = BinaryApp::start(&[("SESSION_SECRET", SECRET_A), ("LOG_FORMAT", "json")]);
    let http = client();
    for (id, cookie) in [
        ("clean-1", None),
        ("forged-1", Some("sid=forged.1.x")),
        ("clean-2", None),
    ] {
        let mut req = http
            .get(format!("{}/", app.address()))
            .header("x-request-id", id);
        if let Some(cookie) = cookie {
            req = req.header("cookie", cookie);
        }
        assert_eq!(req.send().await.unwrap().status(), 200, "{id}");
    }
    assert!(app.terminate(Duration::from_secs(5)).success());

    let logs = app.stdout();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let warnings: Vec<_> = lines
        .iter()
        .filter(|l| l["level"] == "WARN" && l["message"].as_str().unwrap_or("").contains("cookie"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning, for the forged cookie:\n{logs}"
    );
    assert_eq!(warnings[0]["span"]["name"], "request", "{logs}");
    assert_eq!(warnings[0]["span"]["request_id"], "forged-1", "{logs}");
    let outside: Vec<_> = lines
        .iter()
        .filter(|l| l.get("request_id").is_none() && l["message"] != "request")
        .collect();
    assert!(!outside.is_empty(), "start-up and shutdown lines:\n{logs}");
    for line in outside.iter().filter(|l| l["level"] != "WARN") {
        assert!(
            line.get("span").is_none(),
            "logged outside any request: {line}"
        );
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero_in_time() {
    let redis = RedisServer::start();
    let mut app = BinaryApp::start(&[
        ("REDIS_URL", &redis.url()),
        ("SESSION_SECRET", SECRET_A),
        ("COOKIE_SECURE", "false"),
        ("REDIS_TIMEOUT_MS", "4000"),
        ("SHUTDOWN_TIMEOUT_SECONDS", "6"),
    ]);
    let http = client();
    let first = http
        .get(format!("{}/", app.address()))
        .send()
        .await
        .unwrap();
    let cookie = session_cookie(first.headers()).unwrap();

    // Freeze Redis so the next requests are certainly in flight when SIGTERM arrives.
    redis.pause();
    let mut in_flight = Vec::new();
    for _ in 0..6 {
        let (http, url, cookie) = (
            http.clone(),
            format!("{}/api/visits", app.address()),
            cookie.clone(),
        );
        in_flight.push(tokio::spawn(async move {
            http.post(url)
                .header("cookie", cookie)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    crate::support::signal(app.child.id(), "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New connections are refused while the old ones drain.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", app.port)).is_err(),
        "the listener should be closed after SIGTERM"
    );
    redis.resume();

    for req in in_flight {
        let status = req
            .await
            .unwrap()
            .expect("an in-flight request failed during shutdown");
        assert_eq!(status, 200, "in-flight requests complete");
    }
    let status = app.wait_exit(Duration::from_secs(6));
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "exited within SHUTDOWN_TIMEOUT_SECONDS"
    );

    // Every drained increment landed: 1 + 6.
    let again = BinaryApp::start(&[
        ("REDIS_URL", &redis.url()),
        ("SESSION_SECRET", SECRET_A),
        ("COOKIE_SECURE", "false"),
    ]);
    let body: serde_json::Value = http
        .get(format!("{}/api/session", again.address()))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["visits"], 7);
}

#[test]
fn a_request_in_flight_at_sigterm_is_answered_with_connection_close() {
    use std::io::{Read, Write};

    let redis = RedisServer::start();
    let mut app = BinaryApp::start(&[
        ("REDIS_URL", &redis.url()),
        ("SESSION_SECRET", SECRET_A),
        ("REDIS_TIMEOUT_MS", "4000"),
        ("SHUTDOWN_TIMEOUT_SECONDS", "6"),
    ]);
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", app.port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A new session on each: a store call, so a frozen Redis holds it in flight.
    let request = b"POST /api/visits HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n";
    let read_response = |conn: &mut std::net::TcpStream| {
        let mut buf = [0u8; 4096];
        let n = conn.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).to_lowercase()
    };
    conn.write_all(request).unwrap();
    let before = read_response(&mut conn);
    assert!(before.starts_with("http/1.1 200"), "{before}");
    assert!(
        !before.contains("connection: close"),
        "kept alive before the drain: {before}"
    );

    // Frozen Redis keeps the next request in flight while SIGTERM arrives.
    redis.pause();
    conn.write_all(request).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    crate::support::signal(app.child.id(), "TERM");
    std::thread::sleep(Duration::from_millis(300));
    redis.resume();
    let during = read_response(&mut conn);
    assert!(during.starts_with("http/1.1 200"), "{during}");
    // actix-web's graceful stop does this; the rolling restart relies on it. Kept open, the
    // router would send the next request on it and, if the shutdown timeout cut it
    // mid-request, replay that visit on another instance: counted twice.
    assert!(
        during.contains("connection: close"),
        "a response during the drain asks the router to close: {during}"
    );
    let mut rest = Vec::new();
    assert_eq!(
        conn.read_to_end(&mut rest).unwrap(),
        0,
        "the server closes the connection after that response"
    );
    assert_eq!(app.wait_exit(Duration::from_secs(6)).code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "with its last connection closed the drain ends without waiting out the timeout"
    );
}

#[test]
fn sigint_also_exits_zero() {
    let mut app = BinaryApp::start(&[("SESSION_STORE", "memory")]);
    crate::support::signal(app.child.id(), "INT");
    let status = app.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
}
