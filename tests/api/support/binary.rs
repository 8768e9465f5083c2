//! The real binary as a child process, for signals, exit codes and what it prints.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, scratch_dir, signal};

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
    /// Where its stderr goes: a file, because a pipe nobody reads would block the child once
    /// it fills.
    errors: PathBuf,
}

impl BinaryApp {
    /// Starts the binary with exactly these variables (plus PATH) and waits for /health.
    pub fn start(vars: &[(&str, &str)]) -> BinaryApp {
        let port = free_port();
        let dir = scratch_dir("bin");
        let log = dir.join("stdout.log");
        let errors = dir.join("stderr.log");
        let child = Command::new(binary())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", port.to_string())
            // Tests run in parallel, so the default 9090 would clash; tests override it.
            .env("METRICS_PORT", "off")
            .envs(vars.iter().copied())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(std::fs::File::create(&errors).expect("stderr file"))
            .spawn()
            .expect("start binary");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "binary did not listen on {port}; stderr: {}",
                std::fs::read_to_string(&errors).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        BinaryApp {
            child,
            port,
            log,
            errors,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What it has logged so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What it has printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.errors).unwrap_or_default()
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
                "did not exit within {limit:?} of SIGTERM; stderr: {}",
                self.stderr()
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

/// Runs the binary to completion with exactly these variables; returns (code, stderr).
pub fn run_binary_expecting_exit(vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(binary())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("METRICS_PORT", "off")
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
