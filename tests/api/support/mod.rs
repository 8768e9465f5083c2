//! Test harness: real `redis-server` processes on random ports, and the application
//! started in-process on port 0 (or as the real binary when a test needs signals or exit codes).
//!
//! - [`redis`]: a throwaway `redis-server` per test, with fault injection.
//! - [`app`]: the application in-process, its settings and HTTP helpers.
//! - [`binary`]: the real binary as a child process.
//! - [`topology`]: Sentinel sets and Redis Clusters made of real processes.
//! - this module: scratch directories, free ports and signals, which all three use.

pub mod app;
pub mod binary;
pub mod redis;
pub mod topology;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use self::app::{
    TestApp, client, cookie_id, session_cookie, set_cookie_headers, test_settings, visits_in_page,
};
pub use self::binary::{BinaryApp, run_binary_expecting_exit};
pub use self::redis::RedisServer;

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

/// A `VCAP_*` fixture by file name, read at run time from the one fixture directory that the
/// unit tests in `src/config/vcap.rs` read too.
pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/vcap/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Sends a signal by name with `kill`, to avoid a libc dependency for tests.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
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
