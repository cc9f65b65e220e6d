//! GET / (the web page, also the load balancer's health check) and GET /assets/<name>.

use serde_json::Value;
use stemsep_rest::routes::page::CONTENT_SECURITY_POLICY;

use crate::helpers::{expect_error, spawn_app};

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// The JSON the server rendered into the page.
fn server_facts(html: &str) -> Value {
    let open = r#"<script type="application/json" id="server-facts">"#;
    let start = html.find(open).expect("the facts block") + open.len();
    let end = start + html[start..].find("</script>").unwrap();
    serde_json::from_str(&html[start..end]).unwrap()
}

#[tokio::test]
async fn the_page_is_html_under_a_strict_policy_and_needs_no_redis() {
    let mut app = spawn_app().await;
    // The load balancer's check must not depend on Redis.
    app.redis.stop();
    let resp = app.get("/").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "text/html; charset=utf-8");
    assert_eq!(
        header(&resp, "content-security-policy"),
        CONTENT_SECURITY_POLICY
    );
    assert!(CONTENT_SECURITY_POLICY.starts_with("default-src 'self';"));
    assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
    let html = resp.text().await.unwrap();

    // Nothing inline that the policy would block: every script is a file or a JSON data block,
    // no <style> element, no style attribute, no event-handler attribute.
    for tag in html.split("<script").skip(1) {
        let tag = &tag[..tag.find('>').unwrap()];
        assert!(
            tag.contains(" src=\"/assets/") || tag.contains(r#"type="application/json""#),
            "inline script <script{tag}>"
        );
    }
    assert!(!html.contains("<style"));
    assert!(!html.contains(" style="));
    assert!(!html.contains(" onclick=") && !html.contains(" onload="));

    let facts = server_facts(&html);
    assert_eq!(
        facts["models"],
        serde_json::json!(["htdemucs", "htdemucs_ft"])
    );
    assert_eq!(facts["default_model"], "htdemucs");
    assert_eq!(facts["max_body_bytes"], 16 * 1024 * 1024);

    // Every asset the page names is served, from the binary, under the same policy.
    let names: Vec<&str> = html
        .split("\"/assets/")
        .skip(1)
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .collect();
    assert!(
        names.contains(&"app.js") && names.contains(&"style.css"),
        "{names:?}"
    );
    for name in names {
        let resp = app.get(&format!("/assets/{name}")).await;
        assert_eq!(resp.status(), 200, "{name}");
        assert_eq!(
            header(&resp, "content-security-policy"),
            CONTENT_SECURITY_POLICY
        );
        let kind = header(&resp, "content-type").to_owned();
        let expected = match name.rsplit('.').next().unwrap() {
            "js" => "text/javascript",
            "css" => "text/css",
            "svg" => "image/svg+xml",
            other => panic!("unexpected asset type {other}"),
        };
        assert!(kind.starts_with(expected), "{name}: {kind}");
        assert!(!resp.bytes().await.unwrap().is_empty());
    }
    // The page's modules import each other: those are served too.
    assert_eq!(app.get("/assets/mixer.js").await.status(), 200);
    let msg = expect_error(app.get("/assets/nope.js").await, 404).await;
    assert!(msg.contains("nope.js"), "{msg}");
    for path in [
        "/assets/../Cargo.toml",
        "/assets/..%2FCargo.toml",
        "/assets/app.js/x",
    ] {
        assert_eq!(app.raw_get(path).await.0, 404, "{path}");
    }
}

#[tokio::test]
async fn the_page_tells_the_body_limit_in_the_words_of_the_413() {
    let app = crate::helpers::spawn_app_with(|s| s.max_body_mib = 1).await;
    let html = app.get("/").await.text().await.unwrap();
    let facts = server_facts(&html);
    assert_eq!(facts["max_body_bytes"], 1024 * 1024);
    let body = serde_json::json!({ "mp3": "A".repeat(1024 * 1024) });
    let msg = expect_error(app.post_json(&body).await, 413).await;
    assert_eq!(facts["too_large"], msg);
}
