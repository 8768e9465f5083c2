//! HTML pages, rendered with maud: escaped by construction, no template files to ship.

use std::sync::LazyLock;

use maud::{DOCTYPE, Markup, PreEscaped, Render, html};
use sha2::{Digest, Sha256};

use crate::session::StoreKind;

/// What the counter page shows besides the count: fixed while the process runs.
#[derive(Clone, Copy, Debug)]
pub struct CounterPage {
    /// Index of the instance that served the page.
    pub instance_index: u32,
    /// Where sessions are kept.
    pub store: StoreKind,
    /// Session lifetime in seconds.
    pub ttl_seconds: u64,
}

/// Every page's styles, served at [`STYLESHEET_PATH`] rather than inline: the counter page is
/// `no-store` and reloaded on every visit, and inline these 1.4 KB were two thirds of it on
/// every reload (README, Performance), where a browser keeps a stylesheet for good.
pub const STYLESHEET: &str = r#"
:root{color-scheme:light dark;--fg:#1d2430;--muted:#5b6473;--card:#fff;--bg:#eef1f6;--accent:#d6336c;--warn-bg:#fff4d6;--warn-fg:#7a5200}
@media (prefers-color-scheme:dark){:root{--fg:#e8ebf1;--muted:#9aa3b2;--card:#1b2130;--bg:#0f131c;--warn-bg:#3a2f10;--warn-fg:#ffd98a}}
*{box-sizing:border-box}
body{margin:0;min-height:100vh;display:grid;place-items:center;background:var(--bg);color:var(--fg);font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{background:var(--card);border-radius:16px;box-shadow:0 10px 30px rgba(0,0,0,.08);padding:2.5rem 3rem;max-width:32rem;width:calc(100% - 2rem);text-align:center}
h1{font-size:1.1rem;font-weight:600;color:var(--muted);margin:0 0 1rem;letter-spacing:.02em}
.count{font-size:1.35rem;margin:0}
#visits{display:block;font-size:4.5rem;font-weight:700;line-height:1.1;color:var(--accent);font-variant-numeric:tabular-nums}
dl{display:grid;grid-template-columns:auto auto;gap:.25rem 1rem;justify-content:center;margin:1.75rem 0;color:var(--muted);font-size:.9rem}
dt{text-align:right}dd{margin:0;text-align:left;color:var(--fg);font-weight:500}
.warning{background:var(--warn-bg);color:var(--warn-fg);border-radius:10px;padding:.75rem 1rem;font-size:.9rem;margin:0 0 1.5rem}
button{font:inherit;border:0;border-radius:999px;padding:.6rem 1.4rem;background:var(--fg);color:var(--card);cursor:pointer}
button:hover{opacity:.85}
"#;

/// Where [`STYLESHEET`] is served.
pub const STYLESHEET_PATH: &str = "/style.css";

/// The stylesheet's version: the start of its SHA-256, so a changed stylesheet gets a new URL
/// and browsers that keep the old one for good still fetch the new one.
pub fn stylesheet_version() -> &'static str {
    static VERSION: LazyLock<String> = LazyLock::new(|| {
        Sha256::digest(STYLESHEET.as_bytes())[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    });
    &VERSION
}

/// The URL pages link the stylesheet by.
fn stylesheet_href() -> &'static str {
    static HREF: LazyLock<String> =
        LazyLock::new(|| format!("{STYLESHEET_PATH}?v={}", stylesheet_version()));
    &HREF
}

fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                link rel="stylesheet" href=(stylesheet_href());
            }
            body { main { (body) } }
        }
    }
}

fn ttl_text(seconds: u64) -> String {
    match seconds {
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// The visit counter page for this many visits, this one included.
pub fn counter_page(page: &CounterPage, visits: i64) -> Markup {
    counter_markup(page, visits, times(visits))
}

/// The word after the count.
fn times(visits: i64) -> &'static str {
    if visits == 1 { "time" } else { "times" }
}

/// The page around its two variable parts, the count and the word after it.
fn counter_markup(page: &CounterPage, visits: impl Render, times: impl Render) -> Markup {
    layout(
        "Visit counter",
        html! {
            h1 { "redis-sessions" }
            p.count {
                "You have visited this page "
                span #visits { (visits) }
                " " (times)
            }
            dl {
                dt { "Instance" } dd #instance { (page.instance_index) }
                dt { "Session store" } dd #store { (match page.store { StoreKind::Redis => "Redis", StoreKind::Memory => "memory" }) }
                dt { "Session lifetime" } dd #ttl { (ttl_text(page.ttl_seconds)) ", renewed on each visit" }
            }
            @if page.store == StoreKind::Memory {
                p.warning role="alert" {
                    "Sessions are kept in this instance's memory: the count is per instance and is lost when it restarts. Bind a Redis to share it."
                }
            }
            form method="post" action="/reset" {
                button type="submit" { "Forget me" }
            }
        },
    )
}

/// Stand-ins for the count and its word while the rest of the page is rendered once; a
/// NUL byte appears nowhere else in the page.
const COUNT_SLOT: &str = "\0count\0";
const WORD_SLOT: &str = "\0word\0";

/// The counter page rendered once but for the count: the instance, store and lifetime do
/// not change while the process runs, and rendering all 2 KB through maud on every visit
/// cost more than the session logic (README, Performance).
#[derive(Clone, Debug)]
pub struct CounterTemplate {
    before_count: String,
    before_word: String,
    after_word: String,
}

impl CounterTemplate {
    /// Renders everything on the page but the count.
    pub fn new(fixed: &CounterPage) -> Self {
        let page =
            counter_markup(fixed, PreEscaped(COUNT_SLOT), PreEscaped(WORD_SLOT)).into_string();
        // Both slots are in the markup above exactly once, so these always split.
        let (before_count, rest) = page.split_once(COUNT_SLOT).unwrap_or((&page, ""));
        let (before_word, after_word) = rest.split_once(WORD_SLOT).unwrap_or((rest, ""));
        Self {
            before_count: before_count.to_owned(),
            before_word: before_word.to_owned(),
            after_word: after_word.to_owned(),
        }
    }

    /// The page for this many visits, the same text [`counter_page`] renders.
    pub fn render(&self, visits: i64) -> String {
        use std::fmt::Write;
        // 20 characters hold any i64, 5 the word.
        let mut page = String::with_capacity(
            self.before_count.len() + self.before_word.len() + self.after_word.len() + 25,
        );
        page.push_str(&self.before_count);
        let _ = write!(page, "{visits}");
        page.push_str(&self.before_word);
        page.push_str(times(visits));
        page.push_str(&self.after_word);
        page
    }
}

/// A short error page; never shows internals.
pub fn error_page(status: u16, message: &str) -> Markup {
    layout(
        message,
        html! {
            h1 { (status) }
            p.count { (message) }
            p { a href="/" { "Back to the counter" } }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_shows_the_count_instance_store_and_lifetime() {
        let html = counter_page(
            &CounterPage {
                instance_index: 3,
                store: StoreKind::Redis,
                ttl_seconds: 1800,
            },
            7,
        )
        .into_string();
        assert!(html.contains(r#"<span id="visits">7</span>"#), "{html}");
        assert!(html.contains("You have visited this page"));
        assert!(html.contains(r#"<dd id="instance">3</dd>"#));
        assert!(html.contains("30 min"));
        assert!(
            html.contains(&format!(
                r#"<link rel="stylesheet" href="/style.css?v={}">"#,
                stylesheet_version()
            )),
            "{html}"
        );
        assert!(html.contains(r#"action="/reset""#) && html.contains("Forget me"));
        assert!(
            !html.contains("per instance"),
            "no memory warning with Redis"
        );
    }

    proptest::proptest! {
        #[test]
        fn the_template_renders_exactly_what_maud_renders(visits in proptest::num::i64::ANY, index in 0u32..100, memory in proptest::bool::ANY, ttl in 1u64..100_000) {
            let page = CounterPage {
                instance_index: index,
                store: if memory { StoreKind::Memory } else { StoreKind::Redis },
                ttl_seconds: ttl,
            };
            let template = CounterTemplate::new(&page);
            proptest::prop_assert_eq!(template.render(visits), counter_page(&page, visits).into_string());
            proptest::prop_assert_eq!(template.render(1), counter_page(&page, 1).into_string());
        }
    }

    #[test]
    fn the_memory_store_is_flagged_on_the_page() {
        let html = counter_page(
            &CounterPage {
                instance_index: 0,
                store: StoreKind::Memory,
                ttl_seconds: 90,
            },
            1,
        )
        .into_string();
        assert!(html.contains("per instance") && html.contains(r#"role="alert""#));
        assert!(
            html.contains("1</span> time<"),
            "singular for one visit: {html}"
        );
        assert!(html.contains("90 s"));
    }
}
