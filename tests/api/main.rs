//! Integration tests: the real application against real `redis-server` processes.

mod assets;
mod binary;
mod credentials;
mod faults;
mod ha;
mod handle;
mod head;
mod health;
mod hostile;
mod metrics;
mod sessions;
mod store_errors;
mod store_suite;
mod support;
mod tls;
