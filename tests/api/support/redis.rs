//! A real `redis-server` per test, on a random port, that tests can kill, pause and restart.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deadpool_redis::redis;

use super::{free_port, scratch_dir, signal};

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
        // A TLS-only server passes `--port 0` itself and listens on its `--tls-port`; one with
        // both keeps `port` as its plain port, which the harness uses.
        let tls = self.args.iter().any(|a| a == "--port");
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

    /// Whether it runs (it was not killed or terminated).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
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

    /// All keys, via `KEYS *`: a test Redis holds a handful, so blocking it briefly is fine.
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
