//! The handler-facing `Session` API, through a small app of its own over each store.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpResponse, test, web};
use redis_sessions::config::{CookieSecure, RedisEndpoint, RedisTopology};
use redis_sessions::session::store::{MemoryStore, RedisStore};
use redis_sessions::session::{
    Session, SessionConfig, SessionMiddleware, SessionStore, SigningKeys,
};
use secrecy::SecretString;

use crate::support::{RedisServer, SECRET_A};

fn config() -> SessionConfig {
    SessionConfig {
        cookie_name: "sid".into(),
        cookie_secure: CookieSecure::Never,
        on_cloud_foundry: false,
        ttl: Duration::from_secs(60),
        key_prefix: "sess".into(),
        store_timeout: Duration::from_secs(2),
    }
}

async fn set(session: Session, path: web::Path<(String, String)>) -> HttpResponse {
    let (field, value) = path.into_inner();
    session.insert(&field, value).unwrap();
    HttpResponse::Ok().finish()
}

async fn get(session: Session, field: web::Path<String>) -> HttpResponse {
    let value: Option<String> = session.get(&field).await.unwrap();
    HttpResponse::Ok().body(value.unwrap_or_else(|| "<none>".into()))
}

async fn remove(session: Session, field: web::Path<String>) -> HttpResponse {
    session.remove(&field);
    HttpResponse::Ok().finish()
}

async fn renew(session: Session) -> HttpResponse {
    session.renew().await.unwrap();
    HttpResponse::Ok().finish()
}

async fn set_then_count(
    session: Session,
) -> Result<HttpResponse, redis_sessions::session::SessionError> {
    session.insert("name", "ada")?;
    let n = session.incr("n", 1).await?;
    let name: Option<String> = session.get("name").await?;
    Ok(HttpResponse::Ok().body(format!("{n} {}", name.unwrap_or_default())))
}

/// Runs the scenario against an app over `store`.
async fn scenario<S: SessionStore>(store: Arc<S>) {
    let keys =
        Arc::new(SigningKeys::for_store(&[SecretString::from(SECRET_A)], store.kind()).unwrap());
    let app = test::init_service(
        App::new()
            .route("/set/{field}/{value}", web::post().to(set))
            .route("/get/{field}", web::get().to(get))
            .route("/remove/{field}", web::post().to(remove))
            .route("/renew", web::post().to(renew))
            .route("/both", web::post().to(set_then_count))
            .wrap(SessionMiddleware::new(store, keys, config())),
    )
    .await;
    let call = |method: &str, path: &str, cookie: Option<&str>| {
        let mut req = match method {
            "GET" => test::TestRequest::get(),
            _ => test::TestRequest::post(),
        }
        .uri(path);
        if let Some(c) = cookie {
            req = req.insert_header(("cookie", c.to_owned()));
        }
        req.to_request()
    };

    // A read with no session creates none.
    let res = test::call_service(&app, call("GET", "/get/a", None)).await;
    assert!(cookie_of(&res).is_none());
    assert_eq!(test::read_body(res).await, "<none>");

    // Inserts are written at the end of the request and read back later.
    let res = test::call_service(&app, call("POST", "/set/a/one", None)).await;
    let cookie = cookie_of(&res).expect("an insert creates the session");
    let res = test::call_service(&app, call("POST", "/set/b/two", Some(&cookie))).await;
    assert_eq!(
        cookie_of(&res),
        None,
        "the cookie is not due for re-issue yet"
    );
    for (field, expected) in [("a", "one"), ("b", "two")] {
        let res =
            test::call_service(&app, call("GET", &format!("/get/{field}"), Some(&cookie))).await;
        assert_eq!(test::read_body(res).await, expected, "field {field}");
    }

    // Concurrent inserts of different fields are deltas: neither overwrites the other.
    let (x, y) = tokio::join!(
        test::call_service(&app, call("POST", "/set/x/1", Some(&cookie))),
        test::call_service(&app, call("POST", "/set/y/2", Some(&cookie))),
    );
    assert!(x.status().is_success() && y.status().is_success());
    for (field, expected) in [("a", "one"), ("x", "1"), ("y", "2")] {
        let res =
            test::call_service(&app, call("GET", &format!("/get/{field}"), Some(&cookie))).await;
        assert_eq!(test::read_body(res).await, expected, "field {field}");
    }

    // Removal.
    test::call_service(&app, call("POST", "/remove/b", Some(&cookie))).await;
    let res = test::call_service(&app, call("GET", "/get/b", Some(&cookie))).await;
    assert_eq!(test::read_body(res).await, "<none>");

    // Pending inserts ride along with an increment, in the same step.
    let res = test::call_service(&app, call("POST", "/both", Some(&cookie))).await;
    assert_eq!(test::read_body(res).await, "1 ada");

    // Renew: a new id with the same data; the old id stops working.
    let res = test::call_service(&app, call("POST", "/renew", Some(&cookie))).await;
    let renewed = cookie_of(&res).expect("renew sets a new cookie");
    assert_ne!(renewed, cookie);
    let res = test::call_service(&app, call("GET", "/get/a", Some(&renewed))).await;
    assert_eq!(
        test::read_body(res).await,
        "one",
        "data moved to the new id"
    );
    let res = test::call_service(&app, call("GET", "/get/a", Some(&cookie))).await;
    assert_eq!(
        test::read_body(res).await,
        "<none>",
        "the old id no longer works"
    );
}

fn cookie_of<B>(res: &actix_web::dev::ServiceResponse<B>) -> Option<String> {
    res.response()
        .cookies()
        .find(|c| c.name() == "sid")
        .map(|c| format!("sid={}", c.value()))
}

#[actix_web::test]
async fn the_session_api_behaves_the_same_over_redis() {
    let redis = RedisServer::start();
    let endpoint = RedisEndpoint::from_url(&redis.url()).unwrap();
    scenario(Arc::new(
        RedisStore::new(
            &endpoint,
            &RedisTopology::Standalone,
            4,
            Duration::from_secs(2),
            "sess",
        )
        .unwrap(),
    ))
    .await;
}

#[actix_web::test]
async fn the_session_api_behaves_the_same_in_memory() {
    scenario(Arc::new(MemoryStore::new(100))).await;
}

#[actix_web::test]
async fn instances_keep_agreeing_on_the_shared_secret_after_redis_loses_it() {
    use redis_sessions::session::cookie::RawCookie;
    use redis_sessions::session::id::SessionId;

    let redis = RedisServer::start();
    let endpoint = RedisEndpoint::from_url(&redis.url()).unwrap();
    let store = RedisStore::new(
        &endpoint,
        &RedisTopology::Standalone,
        2,
        Duration::from_secs(2),
        "sess",
    )
    .unwrap();
    let every = Duration::from_millis(100);
    let flush = || {
        let _: () = deadpool_redis::redis::cmd("FLUSHALL")
            .query(&mut redis.conn())
            .unwrap();
    };

    let running = SigningKeys::shared(every);
    let cookie = running
        .get(&store)
        .await
        .unwrap()
        .sign(&SessionId::generate());

    // Redis loses everything; the running instance puts its secret back on its next check,
    // so an instance started afterwards agrees with it.
    flush();
    tokio::time::sleep(every * 2).await;
    running.get(&store).await.unwrap();
    let started_later = SigningKeys::shared(every);
    assert!(
        started_later
            .get(&store)
            .await
            .unwrap()
            .verify(&RawCookie::new(&cookie))
            .is_ok()
    );

    // If a new instance wins the race instead, the running one adopts its secret and still
    // accepts the cookies it signed before.
    flush();
    let newcomer = SigningKeys::shared(every);
    // One issued time for both signatures below, so a second ticking between them is no matter.
    let issued = redis_sessions::session::cookie::unix_now();
    let new_cookie = newcomer
        .get(&store)
        .await
        .unwrap()
        .sign_at(&SessionId::generate(), issued);
    tokio::time::sleep(every * 2).await;
    let adopted = running.get(&store).await.unwrap();
    assert!(
        adopted.verify(&RawCookie::new(&new_cookie)).is_ok(),
        "the newcomer's cookie"
    );
    assert!(
        adopted.verify(&RawCookie::new(&cookie)).is_ok(),
        "its own older cookie"
    );
    assert_eq!(
        adopted.sign_at(&SessionId::parse(&new_cookie[..43]).unwrap(), issued),
        new_cookie,
        "signs with the winner's secret"
    );
}

#[actix_web::test]
async fn all_the_store_work_of_a_request_shares_one_deadline() {
    let redis = RedisServer::start();
    let endpoint = RedisEndpoint::from_url(&redis.url()).unwrap();
    let timeout = Duration::from_millis(300);
    let store = Arc::new(
        RedisStore::new(&endpoint, &RedisTopology::Standalone, 2, timeout, "sess").unwrap(),
    );
    // A shared secret that is due for its re-check, so a request makes two store calls.
    let keys = Arc::new(SigningKeys::shared(Duration::from_millis(50)));
    let app = test::init_service(
        App::new()
            .route("/both", web::post().to(set_then_count))
            .wrap(SessionMiddleware::new(
                store,
                keys,
                SessionConfig {
                    store_timeout: timeout,
                    ..config()
                },
            )),
    )
    .await;
    let res = test::call_service(&app, test::TestRequest::post().uri("/both").to_request()).await;
    let cookie = cookie_of(&res).unwrap();

    tokio::time::sleep(Duration::from_millis(100)).await;
    redis.pause();
    let started = std::time::Instant::now();
    let req = test::TestRequest::post()
        .uri("/both")
        .insert_header(("cookie", cookie))
        .to_request();
    let res = test::call_service(&app, req).await;
    let took = started.elapsed();
    redis.resume();
    assert_eq!(res.status(), 503);
    assert!(
        took < timeout + Duration::from_millis(150),
        "the request took {took:?} for a {timeout:?} deadline"
    );
}
