//! GET /healthz, /metrics, /apiv1/openapi.json (and / as a health check; the page: `page.rs`).

use serde_json::Value;

use crate::helpers::{song, spawn_app};

#[tokio::test]
async fn index_and_health() {
    let app = spawn_app().await;
    assert_eq!(app.get("/").await.status(), 200);
    let resp = app.get("/healthz").await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"redis": "ok", "storage": "ok"}));
}

#[tokio::test]
async fn health_reports_broken_storage() {
    let app = spawn_app().await;
    std::fs::remove_dir_all(app.dir.path().join("storage")).unwrap();
    let resp = app.get("/healthz").await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["redis"], "ok");
    assert_ne!(body["storage"], "ok");
    assert!(body["error"].as_str().unwrap().contains("storage"));
}

#[tokio::test]
async fn metrics_count_requests_submissions_and_queue_depth() {
    let app = spawn_app().await;
    app.submit(&song(30)).await;
    app.submit(&song(30)).await;
    app.get("/apiv1/track/zz/vocals").await;
    let resp = app.get("/metrics").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    for needle in [
        r#"stemsep_http_requests_total{method="POST",route="/apiv1/separate",status="200"} 2"#,
        r#"stemsep_http_requests_total{method="GET",route="/apiv1/track/{hash}/{track:.*}",status="400"} 1"#,
        r#"stemsep_submissions_total{outcome="enqueued"} 1"#,
        r#"stemsep_submissions_total{outcome="already_queued"} 1"#,
        r#"stemsep_queue_depth{list="waiting"} 1"#,
        r#"stemsep_queue_depth{list="processing"} 0"#,
        "stemsep_redis_up 1",
        "stemsep_http_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

#[tokio::test]
async fn openapi_documents_every_route() {
    let app = spawn_app().await;
    let resp = app.get("/apiv1/openapi.json").await;
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/apiv1/separate", "post"),
        ("/apiv1/queue", "get"),
        ("/apiv1/status/{hash}", "get"),
        ("/apiv1/track/{hash}/{track}", "get"),
        ("/apiv1/remove/{hash}/{track}", "delete"),
        ("/apiv1/remove/{hash}/{track}", "get"),
        ("/", "get"),
        ("/assets/{name}", "get"),
        ("/healthz", "get"),
        ("/metrics", "get"),
        ("/apiv1/openapi.json", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} undocumented"
        );
    }
    assert!(doc["components"]["schemas"]["SeparateRequest"].is_object());
}
