//! Redis refusals against a live app: each gets the status a visitor should see, a log line
//! naming the cause, and `/ready` turns DOWN for the ones that do not pass on their own.

use std::time::{Duration, Instant};

use deadpool_redis::redis;
use redis_sessions::config::{RedisEndpoint, RedisTopology};
use redis_sessions::session::store::{RedisStore, SessionStore, StoreErrorKind};

use crate::support::{BinaryApp, RedisServer, SECRET_A, TestApp, free_port};

const PASSWORD: &str = "store-errors-password";

/// An admin connection that authenticates as the default user when a password is given.
fn admin(redis: &RedisServer, password: Option<&str>) -> redis::Connection {
    let url = match password {
        Some(p) => format!("redis://:{p}@127.0.0.1:{}", redis.port()),
        None => redis.url(),
    };
    redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .expect("admin connection")
}

/// `redis://[user:password@]127.0.0.1:<port>`.
fn url_with(redis: &RedisServer, userinfo: &str) -> String {
    format!("redis://{userinfo}@127.0.0.1:{}", redis.port())
}

/// Asserts a 503 with the given `Retry-After`, in the path's format, and returns its body.
async fn assert_503(app: &TestApp, method: &str, path: &str, retry_after: &str) -> String {
    let res = app.send(method, path, None).await;
    assert_eq!(res.status(), 503, "{method} {path}");
    assert_eq!(
        res.headers()["retry-after"],
        retry_after,
        "{method} {path}: Retry-After"
    );
    assert!(
        res.headers().get("set-cookie").is_none(),
        "{method} {path}: a failed request sets no cookie"
    );
    let json = path.starts_with("/api/");
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with(if json {
            "application/json"
        } else {
            "text/html"
        }),
        "{method} {path}: {content_type}"
    );
    res.text().await.unwrap()
}

/// `/ready`'s status and the JSON of its Redis check.
async fn ready(app: &TestApp) -> (u16, serde_json::Value) {
    let res = app.send("GET", "/ready", None).await;
    let status = res.status().as_u16();
    let body: serde_json::Value = res.json().await.unwrap();
    (status, body["checks"]["redis"].clone())
}

#[tokio::test]
async fn a_full_redis_answers_503_with_retry_after_logs_once_per_burst_and_recovers() {
    let redis = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--maxmemory",
        "2mb",
        "--maxmemory-policy",
        "noeviction",
    ]);
    let mut app = BinaryApp::start(&[
        ("REDIS_URL", &redis.url()),
        ("SESSION_SECRET", SECRET_A),
        ("LOG_FORMAT", "json"),
        ("HTTP_WORKERS", "1"),
    ]);
    let http = crate::support::client();
    let get = |path: &str, cookie: Option<&str>| {
        let mut req = http.get(format!("{}{path}", app.address()));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send()
    };
    let res = get("/", None).await.unwrap();
    assert_eq!(res.status(), 200);
    let cookie = crate::support::session_cookie(res.headers()).unwrap();

    // One script writes past the limit: Redis checks maxmemory when a command starts.
    let mut conn = admin(&redis, None);
    let () = redis::cmd("EVAL")
        .arg("for i = 1, 300 do redis.call('SET', 'fill:' .. i, string.rep('x', 10000)) end")
        .arg(0)
        .query(&mut conn)
        .unwrap();

    let res = get("/", None).await.unwrap();
    assert_eq!(res.status(), 503, "a new visitor on a full Redis");
    assert_eq!(res.headers()["retry-after"], "10");
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(res.text().await.unwrap().contains("session store is full"));

    let res = http
        .post(format!("{}/api/visits", app.address()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "10");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], 503, "{body}");
    assert!(
        !body.to_string().contains("maxmemory"),
        "no internals: {body}"
    );

    // Redis 7 refuses a script only at its first write when memory is short, and an existing
    // session's update starts with EXPIRE, which needs no memory: existing visitors go on.
    let res = get("/", Some(&cookie)).await.unwrap();
    assert_eq!(res.status(), 200, "an existing session keeps counting");
    for _ in 0..20 {
        assert_eq!(get("/", None).await.unwrap().status(), 503);
    }
    assert_eq!(
        get("/ready", None).await.unwrap().status(),
        200,
        "taking instances out of rotation frees no memory"
    );

    // Room again: the service recovers without a restart.
    let () = redis::cmd("FLUSHALL").query(&mut conn).unwrap();
    assert_eq!(get("/", None).await.unwrap().status(), 200);

    let status = app.terminate(Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
    let logs = app.stdout();
    let errors: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["level"] == "ERROR")
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "22 refused requests within seconds log one ERROR line:\n{logs}"
    );
    assert_eq!(errors[0]["error.kind"], "oom", "{}", errors[0]);
    assert!(
        errors[0]["error.message"]
            .as_str()
            .unwrap()
            .contains("out of memory"),
        "{}",
        errors[0]
    );
}

#[tokio::test]
async fn a_wrong_password_answers_503_and_turns_ready_down_as_auth() {
    let redis = RedisServer::start_with(&["--save", "", "--requirepass", PASSWORD]);
    let app = TestApp::spawn_with(crate::support::test_settings(
        Some(&url_with(&redis, ":not-the-password")),
        &[],
    ))
    .await;

    assert_503(&app, "GET", "/", "30").await;
    let body = assert_503(&app, "POST", "/api/visits", "30").await;
    assert!(
        !body.contains("WRONGPASS") && !body.contains("AUTH"),
        "{body}"
    );
    let (status, check) = ready(&app).await;
    assert_eq!(status, 503);
    assert_eq!(check["kind"], "auth", "{check}");
    assert!(
        check["reason"].as_str().unwrap().contains("credentials"),
        "{check}"
    );
    app.stop().await;
}

#[tokio::test]
async fn no_password_against_requirepass_is_an_auth_failure_not_a_crash() {
    let redis = RedisServer::start_with(&["--save", "", "--requirepass", PASSWORD]);
    let app = TestApp::spawn(Some(&redis), &[]).await;

    assert_503(&app, "GET", "/", "30").await;
    assert_503(&app, "POST", "/api/visits", "30").await;
    let (status, check) = ready(&app).await;
    assert_eq!(
        (status, check["kind"].as_str()),
        (503, Some("auth")),
        "{check}"
    );
    app.stop().await;
}

/// The app, connected as a new ACL user `name` (password `<name>-pw`) with `rules`.
async fn app_as_acl_user(redis: &RedisServer, name: &str, rules: &[&str]) -> TestApp {
    let password = format!(">{name}-pw");
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(name)
        .arg("on")
        .arg(&password)
        .arg(rules)
        .query(&mut admin(redis, None))
        .unwrap();
    TestApp::spawn_with(crate::support::test_settings(
        Some(&url_with(redis, &format!("{name}:{name}-pw"))),
        &[],
    ))
    .await
}

#[tokio::test]
async fn an_acl_user_without_evalsha_gets_503_and_ready_down_as_permission() {
    let redis = RedisServer::start();
    let app = app_as_acl_user(&redis, "pinger", &["~*", "+ping"]).await;

    assert_503(&app, "GET", "/", "30").await;
    let (status, check) = ready(&app).await;
    assert_eq!(status, 503, "PING works, but nothing else would: {check}");
    assert_eq!(check["kind"], "permission", "{check}");
    app.stop().await;
}

#[tokio::test]
async fn an_acl_user_without_multi_is_reported_by_ready_as_permission() {
    let redis = RedisServer::start();
    let app = app_as_acl_user(&redis, "nomulti", &["~sess:*", "+@all", "-multi"]).await;

    let (status, check) = ready(&app).await;
    assert_eq!(status, 503, "a first visit needs MULTI: {check}");
    assert_eq!(check["kind"], "permission", "{check}");
    assert_503(&app, "GET", "/", "30").await;
    app.stop().await;
}

/// `RESTORE` (in `@dangerous`) and `DUMP` only make new sessions cheaper: an ACL user
/// without one of them gets the same sessions by transaction, and readiness does not mind.
#[tokio::test]
async fn an_acl_user_without_restore_or_dump_still_gets_new_sessions_with_their_ttl() {
    let redis = RedisServer::start();
    for denied in ["restore", "dump"] {
        let minus = format!("-{denied}");
        let app = app_as_acl_user(&redis, denied, &["~sess:*", "+@all", &minus]).await;
        let mut cookies = Vec::new();
        for _ in 0..4 {
            let (visits, cookie) = app.visit(None).await;
            assert_eq!(visits, 1, "without {denied}");
            cookies.push(cookie.expect("a first visit sets a cookie"));
        }
        for cookie in &cookies {
            assert_eq!(app.visit(Some(cookie)).await.0, 2, "without {denied}");
        }
        let (status, check) = ready(&app).await;
        assert_eq!(status, 200, "without {denied}: {check}");
        app.stop().await;
    }
    let mut conn = admin(&redis, None);
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .unwrap();
    let stat = |cmd: &str, field: &str| -> u64 {
        let line = info
            .lines()
            .find(|l| l.starts_with(&format!("cmdstat_{cmd}:")));
        line.and_then(|l| {
            l.split([':', ','])
                .find_map(|kv| kv.strip_prefix(&format!("{field}=")))
        })
        .map_or(0, |n| n.parse().unwrap())
    };
    // Each denied command was tried once, refused, and never again.
    assert_eq!(stat("restore", "rejected_calls"), 1, "{info}");
    assert_eq!(stat("restore", "calls"), 0, "{info}");
    assert_eq!(stat("dump", "rejected_calls"), 1, "{info}");
    let keys: Vec<String> = redis::cmd("KEYS").arg("sess:*").query(&mut conn).unwrap();
    let sessions: Vec<&String> = keys.iter().filter(|k| *k != "sess:secret").collect();
    assert_eq!(sessions.len(), 8, "{keys:?}");
    for key in sessions {
        let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut conn).unwrap();
        assert!(ttl > 0, "{key} has a TTL of {ttl}");
    }
}

#[tokio::test]
async fn ready_names_the_one_command_an_acl_user_may_not_run() {
    let redis = RedisServer::start();
    let app = app_as_acl_user(&redis, "almost", &["~sess:*", "+@all", "-expire"]).await;

    let (status, check) = ready(&app).await;
    assert_eq!(status, 503, "{check}");
    assert_eq!(check["kind"], "permission", "{check}");
    assert!(
        !check["reason"].as_str().unwrap().contains("EXPIRE"),
        "the body names no internals: {check}"
    );
    assert_503(&app, "GET", "/", "30").await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("sess:*")
        .query(&mut admin(&redis, None))
        .unwrap();
    assert!(
        keys.iter().all(|k| k == "sess:secret"),
        "the refused EXPIRE discarded the whole first visit, HSET too: {keys:?}"
    );
    assert_eq!(
        app.send("GET", "/api/session", None).await.status(),
        200,
        "a read without a session needs no command"
    );
    app.stop().await;

    // The log gets the chain, which names the command.
    let store = RedisStore::new(
        &RedisEndpoint::from_url(&url_with(&redis, "almost:almost-pw")).unwrap(),
        &RedisTopology::Standalone,
        1,
        Duration::from_secs(2),
        "sess",
    )
    .unwrap();
    let e = store.ping().await.unwrap_err();
    let chain = redis_sessions::telemetry::error_chain(&e);
    assert!(
        chain.contains("may not run EXPIRE on sess:secret"),
        "{chain}"
    );
}

#[tokio::test]
async fn a_redis_that_cannot_persist_refuses_writes_with_a_503() {
    // A background save into a directory that no longer exists fails, and with save points
    // and stop-writes-on-bgsave-error (both default) Redis then refuses writes with MISCONF.
    let gone = crate::support::ScratchDir::new("misconf");
    let redis = RedisServer::start_with(&["--dir", gone.0.to_str().unwrap()]);
    let app = TestApp::spawn(Some(&redis), &[]).await;
    assert_eq!(app.visit(None).await.0, 1);
    std::fs::remove_dir_all(&gone.0).unwrap();
    let mut conn = admin(&redis, None);
    let _: redis::Value = redis::cmd("BGSAVE").query(&mut conn).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query(&mut conn)
            .unwrap();
        if info.contains("rdb_last_bgsave_status:err") {
            break;
        }
        assert!(Instant::now() < deadline, "BGSAVE never failed:\n{info}");
        std::thread::sleep(Duration::from_millis(20));
    }

    assert_503(&app, "GET", "/", "30").await;
    app.stop().await;
}

#[tokio::test]
async fn a_replica_after_failover_answers_503_not_500() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis), &[]).await;
    assert_eq!(app.visit(None).await.0, 1);

    // Demoted to a replica of a primary that does not exist: writes get READONLY.
    let mut conn = admin(&redis, None);
    let () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(free_port())
        .query(&mut conn)
        .unwrap();
    assert_503(&app, "GET", "/", "1").await;
    // A replica cannot take this service's writes, so the router should stop sending
    // traffic here until the endpoint is a primary again (issue 8).
    let (status, check) = ready(&app).await;
    assert_eq!(
        (status, check["kind"].as_str()),
        (503, Some("readonly")),
        "{check}"
    );

    // And once it serves no stale data, everything gets MASTERDOWN, PING included.
    let () = redis::cmd("CONFIG")
        .arg(&["SET", "replica-serve-stale-data", "no"])
        .query(&mut conn)
        .unwrap();
    assert_503(&app, "GET", "/", "1").await;
    let (status, check) = ready(&app).await;
    assert_eq!(
        (status, check["kind"].as_str()),
        (503, Some("masterdown")),
        "{check}"
    );

    let () = redis::cmd("REPLICAOF")
        .arg(&["NO", "ONE"])
        .query(&mut conn)
        .unwrap();
    assert_eq!(app.visit(None).await.0, 1, "promoted again, it serves");
    app.stop().await;
}

#[tokio::test]
async fn a_redis_busy_with_a_long_script_answers_503() {
    let redis = RedisServer::start_with(&["--save", "", "--busy-reply-threshold", "50"]);
    let app = TestApp::spawn(Some(&redis), &[("REDIS_TIMEOUT_MS", "2000")]).await;
    assert_eq!(app.visit(None).await.0, 1);

    let mut looping = admin(&redis, None);
    let runner = std::thread::spawn(move || {
        redis::cmd("EVAL")
            .arg("while true do end")
            .arg(0)
            .query::<redis::Value>(&mut looping)
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_503(&app, "GET", "/", "1").await;

    let mut conn = admin(&redis, None);
    let () = redis::cmd("SCRIPT").arg("KILL").query(&mut conn).unwrap();
    assert!(runner.join().unwrap().is_err(), "the script was killed");
    assert_eq!(
        app.visit(None).await.0,
        1,
        "serves again once the script ends"
    );
    app.stop().await;
}

/// A `redis-server` this test starts by hand, because the harness waits until loading ends.
struct LoadingRedis(std::process::Child);

impl Drop for LoadingRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_redis_loading_its_dataset_answers_503_and_ready_down_until_it_is_loaded() {
    let dir = crate::support::ScratchDir::new("loading");
    let dir_arg = dir.0.to_str().unwrap().to_owned();
    let mut redis = RedisServer::start_with(&["--save", "", "--dir", &dir_arg]);
    let port = redis.port();
    let app = TestApp::spawn(Some(&redis), &[]).await;
    let (_, cookie) = app.visit(None).await;
    let cookie = cookie.unwrap();
    let mut conn = admin(&redis, None);
    let () = redis::cmd("EVAL")
        .arg("for i = 1, 3000 do redis.call('SET', 'filler:' .. i, i) end")
        .arg(0)
        .query(&mut conn)
        .unwrap();
    let () = redis::cmd("SAVE").query(&mut conn).unwrap();
    redis.kill();

    // key-load-delay (a setting Redis keeps for its own tests) makes loading 3,001 keys take
    // about 3 s, and a small event interval lets Redis answer LOADING meanwhile.
    let _loading = LoadingRedis(
        std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--dir", &dir_arg, "--key-load-delay", "1000"])
            .args(["--loading-process-events-interval-bytes", "1024"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server"),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, check) = ready(&app).await;
        if check["kind"] == "loading" {
            assert_eq!(status, 503);
            break;
        }
        assert!(Instant::now() < deadline, "never saw LOADING: {check}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_503(&app, "GET", "/", "1").await;

    let deadline = Instant::now() + Duration::from_secs(10);
    while ready(&app).await.0 != 200 {
        assert!(Instant::now() < deadline, "never finished loading");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.visit(Some(&cookie)).await.0,
        2,
        "the saved session counts on once loaded"
    );
    app.stop().await;
}

#[tokio::test]
async fn each_failure_has_a_kind_for_logs_and_metrics() {
    let store = |url: &str| {
        RedisStore::new(
            &RedisEndpoint::from_url(url).unwrap(),
            &RedisTopology::Standalone,
            2,
            Duration::from_millis(500),
            "sess",
        )
        .unwrap()
    };
    let nobody = store(&format!("redis://127.0.0.1:{}", free_port()));
    assert_eq!(
        nobody.ping().await.unwrap_err().kind(),
        StoreErrorKind::Refused
    );

    let redis = RedisServer::start_with(&["--save", "", "--requirepass", PASSWORD]);
    let wrong = store(&url_with(&redis, ":wrong"));
    assert_eq!(wrong.ping().await.unwrap_err().kind(), StoreErrorKind::Auth);
    let right = store(&url_with(&redis, &format!(":{PASSWORD}")));
    right.ping().await.unwrap();

    redis.pause();
    assert_eq!(
        right.ping().await.unwrap_err().kind(),
        StoreErrorKind::Timeout
    );
    redis.resume();
}
