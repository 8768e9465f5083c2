//! TLS to Redis, verified against a CA made for the test and trusted through SSL_CERT_FILE.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{BinaryApp, RedisServer, SECRET_A, ScratchDir, client, free_port};

/// Makes a CA and a server certificate for 127.0.0.1/localhost with openssl.
pub(crate) fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl must be installed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=redis-sessions test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

fn tls_redis(dir: &Path) -> RedisServer {
    let port = free_port();
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let (cert, key, ca) = (path("server.crt"), path("server.key"), path("ca.crt"));
    RedisServer::start_on(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
    )
}

#[tokio::test]
async fn a_tls_binding_is_verified_with_the_platform_ca_and_serves_sessions() {
    let scratch = ScratchDir::new("tls");
    let dir = &scratch.0;
    make_certificates(dir);
    let redis = tls_redis(dir);
    // The p.redis shape: a tls_port means TLS.
    let services = format!(
        r#"{{"p.redis":[{{"label":"p.redis","name":"tls-redis","tags":["redis"],
        "credentials":{{"host":"127.0.0.1","port":1,"tls_port":{}}}}}]}}"#,
        redis.port()
    );
    let ca = dir.join("ca.crt").to_string_lossy().into_owned();
    let app = BinaryApp::start(&[
        ("VCAP_SERVICES", &services),
        ("SSL_CERT_FILE", &ca),
        ("SESSION_SECRET", SECRET_A),
        ("COOKIE_SECURE", "false"),
        ("REDIS_TIMEOUT_MS", "2000"),
    ]);
    let http = client();
    let ready = http
        .get(format!("{}/ready", app.address()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    let page = http
        .get(format!("{}/", app.address()))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(app.stdout().contains("redis.tls=true"), "{}", app.stdout());
}

#[tokio::test]
async fn a_tls_server_with_an_untrusted_certificate_is_refused() {
    let scratch = ScratchDir::new("tls-untrusted");
    let dir = &scratch.0;
    make_certificates(dir);
    let redis = tls_redis(dir);
    // Trust only an unrelated CA, so the server's chain cannot verify.
    let other = ScratchDir::new("tls-other");
    make_certificates(&other.0);
    let url = format!("rediss://127.0.0.1:{}", redis.port());
    let ca = other.0.join("ca.crt").to_string_lossy().into_owned();
    let app = BinaryApp::start(&[
        ("REDIS_URL", &url),
        ("SSL_CERT_FILE", &ca),
        ("SESSION_SECRET", SECRET_A),
        ("REDIS_TIMEOUT_MS", "2000"),
    ]);
    let http = client();
    let ready = http
        .get(format!("{}/ready", app.address()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        503,
        "an unverifiable certificate must not be trusted"
    );
    assert_eq!(
        http.get(format!("{}/health", app.address()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}
