//! Benchmark peer: the visit counter written the way actix-session's documentation suggests,
//! with its `RedisSessionStore`. It follows the contract in `ci/bench/peers/README.md`.
//!
//! Environment: `PORT` (3000), `REDIS_URL` (`redis://127.0.0.1:6379`), `SESSION_SECRET`,
//! `WORKERS` (actix's default: one per CPU), `REDIS_STORE` (`pool`, the default, or
//! `manager`) and `REDIS_POOL_SIZE` (deadpool's default, 4 × CPUs).

use std::{env, io, process::ExitCode};

use actix_session::{
    Session, SessionMiddleware,
    config::{CookieContentSecurity, PersistentSession},
    storage::RedisSessionStore,
};
use actix_web::{
    App, HttpResponse, HttpServer,
    cookie::{Key, SameSite, time::Duration},
    get, web,
};
use sha2::{Digest, Sha512};

/// The same development secret as the express peer's, so either runs with no setup.
const DEV_SECRET: &str = "bench-peer-development-secret-not-for-production";

/// 30 minutes, for the cookie's `Max-Age` and the Redis key's `EX` alike.
const SESSION_TTL_SECONDS: i64 = 1800;

#[actix_web::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer-actix-session: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let port: u16 = var_or("PORT", "3000")
        .parse()
        .map_err(|_| "PORT must be a port number".to_owned())?;
    let redis_url = var_or("REDIS_URL", "redis://127.0.0.1:6379");
    let secret = var_or("SESSION_SECRET", DEV_SECRET);
    // Key::from needs 64 bytes; hashing lets any secret length work, as express-session does.
    let key = Key::from(&Sha512::digest(secret.as_bytes()));

    let store = match var_or("REDIS_STORE", "pool").as_str() {
        "pool" => {
            let mut config = deadpool_redis::Config::from_url(redis_url);
            if let Ok(size) = env::var("REDIS_POOL_SIZE") {
                let size = size
                    .parse()
                    .map_err(|_| "REDIS_POOL_SIZE must be a positive integer".to_owned())?;
                config.pool = Some(deadpool_redis::PoolConfig::new(size));
            }
            let pool = config
                .create_pool(Some(deadpool_redis::Runtime::Tokio1))
                .map_err(|e| format!("Redis pool: {e}"))?;
            RedisSessionStore::new_pooled(pool).await
        }
        "manager" => RedisSessionStore::new(redis_url).await,
        other => return Err(format!("REDIS_STORE must be pool or manager, got {other:?}")),
    }
    .map_err(|e| format!("Redis session store: {e}"))?;

    let mut server = HttpServer::new(move || {
        let sessions = SessionMiddleware::builder(store.clone(), key.clone())
            .cookie_secure(false) // plain HTTP on loopback
            .cookie_http_only(true)
            .cookie_same_site(SameSite::Lax)
            .cookie_content_security(CookieContentSecurity::Signed)
            .session_lifecycle(
                PersistentSession::default().session_ttl(Duration::seconds(SESSION_TTL_SECONDS)),
            )
            .build();
        App::new().service(health).service(
            web::scope("")
                .wrap(sessions)
                .service(page)
                .service(api_session),
        )
    });
    if let Ok(workers) = env::var("WORKERS") {
        let workers = workers
            .parse()
            .map_err(|_| "WORKERS must be a positive integer".to_owned())?;
        server = server.workers(workers);
    }
    server
        .bind(("0.0.0.0", port))
        .map_err(|e| format!("bind :{port}: {e}"))?
        .run()
        .await
        .map_err(|e: io::Error| e.to_string())
}

fn var_or(name: &str, default: &str) -> String {
    env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The read-modify-write every session library does: read `views`, add one, write it back.
fn count_visit(session: &Session) -> Result<u64, actix_web::Error> {
    let views = session.get::<u64>("views")?.unwrap_or(0) + 1;
    session.insert("views", views)?;
    Ok(views)
}

#[get("/")]
async fn page(session: Session) -> actix_web::Result<HttpResponse> {
    let views = count_visit(&session)?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><title>Visits</title><p>Visits: {views}</p>\n"
        )))
}

#[get("/api/session")]
async fn api_session(session: Session) -> actix_web::Result<HttpResponse> {
    let views = count_visit(&session)?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(format!("{{\"visits\":{views}}}")))
}

/// Outside the session middleware, so it costs no Redis command and sets no cookie.
#[get("/health")]
async fn health() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}
