//! The stylesheet the pages link: served apart from them so browsers keep it, and cached for
//! good only under the URL that names its version.

use crate::support::{RedisServer, TestApp};

/// The `href` of the page's stylesheet link.
fn stylesheet_href(page: &str) -> String {
    let link = page
        .split("<link ")
        .skip(1)
        .find(|tag| tag.contains(r#"rel="stylesheet""#))
        .unwrap_or_else(|| panic!("no stylesheet link in {page}"));
    let href = link.split(r#"href=""#).nth(1).expect("href");
    href[..href.find('"').expect("closing quote")].to_owned()
}

#[tokio::test]
async fn the_pages_stylesheet_is_kept_for_good_and_opens_no_session() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis), &[]).await;
    let page = app.send("GET", "/", None).await.text().await.unwrap();
    assert!(!page.contains("<style"), "no inline styles left: {page}");
    let href = stylesheet_href(&page);
    let version = href
        .strip_prefix("/style.css?v=")
        .unwrap_or_else(|| panic!("{href}"));
    assert!(
        version.len() == 16 && version.bytes().all(|b| b.is_ascii_hexdigit()),
        "{href}"
    );

    let css = app.send("GET", &href, None).await;
    assert_eq!(css.status(), 200);
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert_eq!(
        css.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(css.headers().get("set-cookie").is_none());
    let body = css.text().await.unwrap();
    assert!(body.contains("#visits{"), "{body}");
    // The one session is the page's; the stylesheet touched none.
    assert_eq!(redis.session_keys().len(), 1, "{:?}", redis.session_keys());

    // An error page links the same stylesheet.
    let missing = app.send("GET", "/nowhere", None).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(stylesheet_href(&missing.text().await.unwrap()), href);
    app.stop().await;
}

#[tokio::test]
async fn a_stylesheet_url_naming_another_version_is_revalidated_not_kept() {
    let app = TestApp::spawn(None, &[]).await;
    for path in [
        "/style.css",
        "/style.css?v=0000000000000000",
        "/style.css?x=1&v=",
    ] {
        let res = app.send("GET", path, None).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["cache-control"], "public, no-cache", "{path}");
        assert!(res.text().await.unwrap().contains("#visits{"), "{path}");
    }
    app.stop().await;
}
