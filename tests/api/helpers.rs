//! Test harness: real `redis-server` processes on random ports, and the application
//! started in-process on port 0 (or as the real binary when a test needs signals or exit codes).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use deadpool_redis::redis;
use redis_sessions::Application;
use redis_sessions::config::Settings;
use reqwest::header::{COOKIE, HeaderMap, SET_COOKIE};

/// A secret long enough to be accepted.
pub const SECRET_A: &str = "test-secret-a-0123456789abcdef0123456789";
/// Another accepted secret.
pub const SECRET_B: &str = "test-secret-b-0123456789abcdef0123456789";

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A fresh scratch directory for one test.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "redis-sessions-test-{}-{}-{tag}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// A real `redis-server` owned by one test; killed and cleaned up on drop.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a throwaway Redis with persistence off.
    pub fn start() -> Self {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// Starts a Redis with extra arguments (persistence, TLS, a password…).
    pub fn start_with(args: &[&str]) -> Self {
        Self::start_on(free_port(), args)
    }

    /// Starts a Redis on a given port, for tests that bring it up after the app.
    pub fn start_on(port: u16, args: &[&str]) -> Self {
        let mut server = RedisServer {
            port,
            dir: scratch_dir("redis"),
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let tls = self.args.iter().any(|a| a == "--tls-port");
        let mut cmd = Command::new("redis-server");
        if !tls {
            cmd.args(["--port", &self.port.to_string()]);
        }
        cmd.args(["--bind", "127.0.0.1", "--dir"])
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("redis-server must be installed"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        if !tls {
            // Wait until it serves commands (loading an AOF takes a moment).
            // NOAUTH from a password-protected server means it is up too.
            while redis::Client::open(self.url())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_err_and(|e| e.code() != Some("NOAUTH"))
            {
                assert!(
                    Instant::now() < deadline,
                    "redis-server on {} never answered PING",
                    self.port
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("redis-server is not running")
            .id()
    }

    /// Kills it outright (SIGKILL): connections drop mid-flight.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Shuts it down cleanly (SIGTERM), writing the AOF if enabled.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let _ = child.wait();
        }
    }

    /// Starts it again after `kill` or `terminate`.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
    }

    /// Freezes it (SIGSTOP): TCP still connects, nothing answers.
    pub fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    /// Thaws it (SIGCONT).
    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }

    /// A synchronous connection for inspecting what the app stored.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .expect("connect to test redis")
    }

    /// All keys, via SCAN.
    pub fn keys(&self) -> Vec<String> {
        let mut conn = self.conn();
        let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).expect("KEYS");
        keys.sort();
        keys
    }

    /// Session keys only (without the shared-secret key).
    pub fn session_keys(&self) -> Vec<String> {
        self.keys()
            .into_iter()
            .filter(|k| k != "sess:secret")
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused server ignores SIGKILL until resumed on some kernels; resume first.
            signal(child.id(), "CONT");
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends a signal by name with `kill`, to avoid a libc dependency for tests.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// Settings for a test app: port 0, a known secret, quick timeouts; `vars` override.
pub fn test_settings(redis: Option<&str>, vars: &[(&str, &str)]) -> Settings {
    let mut all: Vec<(String, String)> = vec![
        ("PORT".into(), "0".into()),
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

/// The path of the release-profile-independent binary built for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_redis-sessions")
}

/// The real binary running as a child process, for signals, exit codes and stdout.
pub struct BinaryApp {
    /// The child process.
    pub child: Child,
    /// Its port.
    pub port: u16,
    /// Where its stdout goes.
    pub log: PathBuf,
}

impl BinaryApp {
    /// Starts the binary with exactly these variables (plus PATH) and waits for /health.
    pub fn start(vars: &[(&str, &str)]) -> BinaryApp {
        let port = free_port();
        let log = scratch_dir("bin").join("stdout.log");
        let child = Command::new(binary())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", port.to_string())
            .envs(vars.iter().copied())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("start binary");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "binary did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        BinaryApp { child, port, log }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What it has logged so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to `limit` for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        self.wait_exit(limit)
    }

    /// Waits up to `limit` for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "did not exit within {limit:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BinaryApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.log.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A scratch directory removed when dropped.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    /// A fresh, empty directory.
    pub fn new(tag: &str) -> Self {
        Self(scratch_dir(tag))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the binary to completion with exactly these variables; returns (code, stderr).
pub fn run_binary_expecting_exit(vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(binary())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start binary");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("binary kept running with {vars:?}; expected it to exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
