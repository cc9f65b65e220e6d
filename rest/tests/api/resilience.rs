//! Redis stopped and restarted under a running server: 503 JSON while down, normal service after,
//! same process, nothing lost.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{expect_error, song, spawn_app};

async fn wait_until_ok(app: &crate::helpers::TestApp, path: &str) -> reqwest::Response {
    for _ in 0..100 {
        let resp = app.get(path).await;
        if resp.status() == 200 {
            return resp;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} did not recover after Redis came back");
}

#[tokio::test]
async fn redis_outage_is_503_then_recovers_without_restart() {
    let mut app = spawn_app().await;
    let hash = app.submit(&song(20)).await;

    app.redis.kill();
    let msg = expect_error(app.get("/apiv1/queue").await, 503).await;
    assert!(msg.contains("Redis"), "{msg}");
    let msg = expect_error(app.post_like_lab_client(&song(21)).await, 503).await;
    assert!(msg.contains("Redis"), "{msg}");
    expect_error(app.get(&format!("/apiv1/status/{hash}")).await, 503).await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 503);
    let health: Value = health.json().await.unwrap();
    assert_ne!(health["redis"], "ok");
    assert_eq!(health["storage"], "ok");
    assert!(health["error"].as_str().unwrap().contains("redis"));
    // The load balancer's check does not depend on Redis.
    assert_eq!(app.get("/").await.status(), 200);

    app.redis.start_again().unwrap();
    let queue: Value = wait_until_ok(&app, "/apiv1/queue")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        queue["queue"],
        serde_json::json!([hash]),
        "the queued job survived the crash"
    );
    assert_eq!(app.get("/healthz").await.status(), 200);
    let hash2 = app.submit(&song(21)).await;
    assert_eq!(app.queue.waiting().await.unwrap(), vec![hash2, hash]);
}

#[tokio::test]
async fn server_starts_while_redis_is_down() {
    let mut app = spawn_app().await;
    app.redis.stop();
    assert_eq!(app.get("/healthz").await.status(), 503);
    expect_error(app.get("/apiv1/queue").await, 503).await;
    app.redis.start_again().unwrap();
    wait_until_ok(&app, "/healthz").await;
}
