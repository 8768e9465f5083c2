//! Hostile clients: every limit answers, and the server stays up.
//!
//! Raw sockets here are blocking, so they run on `spawn_blocking`: the in-process server
//! shares the test's runtime and must keep running while a test waits on a socket.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::TestApp;

fn raw_exchange(port: u16, bytes: &[u8], wait: Duration) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    let _ = stream.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (out, closed)
}

async fn assert_still_up(app: &TestApp) {
    assert_eq!(
        app.send("GET", "/health", None).await.status(),
        200,
        "the server must stay up"
    );
}

#[tokio::test]
async fn an_8_mib_body_is_refused_with_413() {
    let app = TestApp::spawn(None, &[]).await;
    let res = app
        .client
        .post(format!("{}/api/visits", app.address))
        .body(vec![b'x'; 8 * 1024 * 1024])
        .send()
        .await;
    match res {
        Ok(res) => assert_eq!(res.status(), 413),
        // The server may close before the client finishes sending; that also refuses it.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    assert_still_up(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn tls_or_garbage_bytes_on_the_plain_port_get_the_connection_closed() {
    let app = TestApp::spawn(None, &[]).await;
    // The start of a TLS ClientHello, then plain junk.
    let hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    for bytes in [hello, b"\x00\xff\xfe garbage \r\n\r\n".as_slice()] {
        // Within the client request timeout (5 s) at the latest.
        let (port, owned) = (app.port, bytes.to_vec());
        let (reply, closed) =
            tokio::task::spawn_blocking(move || raw_exchange(port, &owned, Duration::from_secs(8)))
                .await
                .unwrap();
        assert!(closed, "connection left open after {bytes:?}");
        let text = String::from_utf8_lossy(&reply);
        assert!(
            reply.is_empty()
                || text.starts_with("HTTP/1.1 400")
                || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
    }
    assert_still_up(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn a_thousand_idle_connections_do_not_slow_health() {
    let app = TestApp::spawn(None, &[("HTTP_WORKERS", "2")]).await;
    let port = app.port;
    let idle: Vec<TcpStream> = tokio::task::spawn_blocking(move || {
        (0..1000)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect()
    })
    .await
    .unwrap();
    let started = Instant::now();
    assert_still_up(&app).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "/health took {:?}",
        started.elapsed()
    );
    drop(idle);
    app.stop().await;
}

#[tokio::test]
async fn slow_partial_headers_get_cut_off() {
    let app = TestApp::spawn(None, &[]).await;
    let port = app.port;
    let (cut, took) = tokio::task::spawn_blocking(move || slowloris(port))
        .await
        .unwrap();
    assert!(cut, "a slowloris connection was kept for {took:?}");
    assert!(took < Duration::from_secs(8), "cut after {took:?}");
    assert_still_up(&app).await;
    app.stop().await;
}

/// Dribbles a header byte every half second, never finishing the request head; returns
/// whether the server cut the connection, and when.
fn slowloris(port: u16) -> (bool, Duration) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let started = Instant::now();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    while started.elapsed() < Duration::from_secs(12) {
        if stream.write_all(b"X").is_err() {
            return (true, started.elapsed());
        }
        let mut buf = [0u8; 512];
        match stream.read(&mut buf) {
            // 408 Request Timeout and then a shut connection, or just the shut connection.
            Ok(0) => return (true, started.elapsed()),
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(text.starts_with("HTTP/1.1 408"), "{text}");
                return (true, started.elapsed());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (true, started.elapsed()),
        }
    }
    (false, started.elapsed())
}

#[tokio::test]
async fn a_very_long_url_gets_414() {
    let app = TestApp::spawn(None, &[]).await;
    let res = app
        .send("GET", &format!("/{}", "a".repeat(16 * 1024)), None)
        .await;
    assert!(
        res.status() == 414 || res.status() == 404,
        "{}",
        res.status()
    );
    assert_eq!(res.status(), 414);
    assert_still_up(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn a_very_large_header_gets_431_or_400() {
    let app = TestApp::spawn(None, &[]).await;
    let res = app
        .client
        .get(format!("{}/", app.address))
        .header("x-big", "b".repeat(64 * 1024))
        .send()
        .await;
    let status = res.expect("an answer, not a dropped connection").status();
    assert_eq!(status, 431);
    assert_still_up(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn a_hundred_cookies_are_ignored_sanely() {
    let app = TestApp::spawn(None, &[]).await;
    let (_, session) = app.visit(None).await;
    let session = session.unwrap();
    let mut cookies: Vec<String> = (0..100)
        .map(|i| format!("junk{i}={}", "v".repeat(20)))
        .collect();
    cookies.insert(50, session.clone());
    let (visits, _) = app.visit(Some(&cookies.join("; "))).await;
    assert_eq!(visits, 2, "our cookie is found among a hundred others");
    assert_still_up(&app).await;
    app.stop().await;
}
