//! redis-sessions: web sessions kept in Redis, ready for Cloud Foundry.
//!
//! ```text
//! client ─▶ router (gorouter / HAProxy) ─▶ actix-web: request id ─▶ access log ─▶ limits
//!        ─▶ SessionMiddleware ─▶ routes (/, /api/*, /health, /ready) ─▶ SessionStore ─▶ Redis
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod routes;
pub mod session;
pub mod startup;
pub mod telemetry;
pub mod views;

#[cfg(test)]
mod fuzz;

pub use startup::{Application, StartupError};
