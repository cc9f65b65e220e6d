//! The edge on the open internet: API keys (off by default, on by setting), removal by GET turned
//! off, per-key and per-IP rate limits, the queue-depth limit, the cap on uploads in flight, and a
//! JSON object required where the lab sends one.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{json, Value};
use stemsep_rest::auth::AuthMode;
use tokio::io::AsyncWriteExt;

use crate::helpers::{b64, expect_error, lab_hash, song, spawn_app, spawn_app_with, TestApp};

const KEY_A: &str = "key-a-0123456789abcdef";
const KEY_B: &str = "key-b-fedcba9876543210";

/// A server that requires one of two keys.
async fn spawn_with_keys(tweak: impl FnOnce(&mut stemsep_rest::config::Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.auth = AuthMode::Keys;
        s.api_keys = format!("{KEY_A},{KEY_B}").parse().unwrap();
        tweak(s);
    })
    .await
}

#[tokio::test]
async fn without_keys_the_lab_client_needs_none() {
    let app = spawn_app().await;
    let resp = app.post_like_lab_client(&song(40)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(app.get_queue_like_lab_client().await.status(), 200);
}

#[tokio::test]
async fn with_keys_every_route_but_the_probes_needs_one() {
    let app = spawn_with_keys(|_| {}).await;
    let mp3 = song(41);
    let hash = lab_hash(&mp3);

    // The load balancer's and Prometheus' routes stay open.
    for open in ["/", "/healthz", "/metrics"] {
        assert_eq!(app.get(open).await.status(), 200, "{open}");
    }
    // Everything else: 401, JSON, with the scheme to use; nothing happens.
    let resp = app.post_like_lab_client(&mp3).await;
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let msg = expect_error(resp, 401).await;
    assert!(msg.contains("X-API-Key"), "{msg}");
    for path in [
        "/apiv1/queue".to_owned(),
        format!("/apiv1/status/{hash}"),
        format!("/apiv1/track/{hash}/vocals"),
        format!("/apiv1/remove/{hash}/vocals"),
        "/apiv1/openapi.json".to_owned(),
        "/no/such/route".to_owned(),
    ] {
        expect_error(app.get(&path).await, 401).await;
    }
    expect_error(
        app.delete(&format!("/apiv1/remove/{hash}/vocals")).await,
        401,
    )
    .await;
    let wrong = app
        .client
        .get(app.url("/apiv1/queue"))
        .bearer_auth("key-c-0000000000000000")
        .send()
        .await
        .unwrap();
    let msg = expect_error(wrong, 401).await;
    assert!(msg.contains("not valid"), "{msg}");
    assert!(app.queue.waiting().await.unwrap().is_empty());

    // Either header, either key.
    let resp = app
        .client
        .post(app.url("/apiv1/separate"))
        .bearer_auth(KEY_A)
        .json(&json!({"mp3": b64(&mp3)}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = app
        .client
        .get(app.url("/apiv1/queue"))
        .header("X-API-Key", KEY_B)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["queue"], json!([hash]));
    let resp = app
        .client
        .get(app.url("/apiv1/openapi.json"))
        .header("X-API-Key", KEY_A)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn removal_by_get_can_be_turned_off() {
    let app = spawn_app_with(|s| s.remove_by_get = false).await;
    let hash = app.submit(&song(42)).await;
    app.finish_next_job().await;
    let path = format!("/apiv1/remove/{hash}/vocals");
    let resp = app.get(&path).await;
    assert_eq!(resp.headers()["allow"], "DELETE");
    let msg = expect_error(resp, 405).await;
    assert!(msg.contains("DELETE"), "{msg}");
    assert_eq!(
        app.get(&format!("/apiv1/track/{hash}/vocals"))
            .await
            .status(),
        200,
        "a link did not delete the stem"
    );
    assert_eq!(app.delete(&path).await.status(), 200);
    expect_error(app.get(&format!("/apiv1/track/{hash}/vocals")).await, 404).await;
}

#[tokio::test]
async fn each_key_has_its_own_rate() {
    let app = spawn_with_keys(|s| {
        s.rate_per_min = 60;
        s.rate_burst = 3;
    })
    .await;
    let queue = |key: &'static str| {
        app.client
            .get(app.url("/apiv1/queue"))
            .header("X-API-Key", key)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(queue(KEY_A).await.unwrap().status(), 200);
    }
    let resp = queue(KEY_A).await.unwrap();
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "one request a second: {wait}");
    let msg = expect_error(resp, 429).await;
    assert!(msg.contains("retry"), "{msg}");
    // Another key is not held up, and neither are the probes.
    assert_eq!(queue(KEY_B).await.unwrap().status(), 200);
    for _ in 0..10 {
        assert_eq!(app.get("/healthz").await.status(), 200);
    }
}

#[tokio::test]
async fn without_keys_each_address_has_its_own_rate() {
    let app = spawn_app_with(|s| {
        s.rate_per_min = 60;
        s.rate_burst = 2;
    })
    .await;
    for _ in 0..2 {
        assert_eq!(app.get("/apiv1/queue").await.status(), 200);
    }
    expect_error(app.get("/apiv1/queue").await, 429).await;
    // Another client address (all of 127/8 is loopback on Linux).
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let resp = other.get(app.url("/apiv1/queue")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_full_queue_refuses_new_songs_with_503() {
    let app = spawn_app_with(|s| s.max_queue = 2).await;
    let first = app.submit(&song(43)).await;
    app.submit(&song(44)).await;
    let resp = app.post_like_lab_client(&song(45)).await;
    assert_eq!(resp.headers()["retry-after"], "30");
    let msg = expect_error(resp, 503).await;
    assert!(msg.contains("queue is full"), "{msg}");
    assert_eq!(app.queue.waiting().await.unwrap().len(), 2);
    let stored = std::fs::read_dir(app.dir.path().join("storage/queue"))
        .unwrap()
        .count();
    assert_eq!(stored, 2, "the refused song was not stored");
    // A song already queued is still answered as such.
    let again: Value = app
        .post_like_lab_client(&song(43))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["hash"], first);
    // Room again once a worker takes one.
    let claim = app.claim_next().await;
    assert_eq!(app.post_like_lab_client(&song(45)).await.status(), 200);
    app.finish(&claim).await;
}

#[tokio::test]
async fn a_json_array_is_not_a_submission() {
    let app = spawn_app().await;
    let mp3 = song(46);
    let array = json!([b64(&mp3), null, {"url": "http://example.com/cb", "data": {}}]);
    let msg = expect_error(app.post_json(&array).await, 400).await;
    assert!(msg.contains("JSON object"), "{msg}");
    expect_error(app.post_raw(format!("  [\"{}\"]", b64(&mp3))).await, 400).await;
    // Nor is a callback given as an array.
    let body = json!({"mp3": b64(&mp3), "callback": ["http://example.com/cb", {}]});
    let msg = expect_error(app.post_json(&body).await, 400).await;
    assert!(msg.contains("callback must be a JSON object"), "{msg}");
    assert!(app.queue.waiting().await.unwrap().is_empty());
    assert!(app
        .queue
        .job(&lab_hash(&mp3).parse().unwrap())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn uploads_in_flight_are_capped() {
    let app = spawn_app_with(|s| {
        s.max_uploads = 1;
        s.upload_wait_secs = 0;
    })
    .await;
    // One upload that sends its headers and half its body, then stalls.
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let head = "POST /apiv1/separate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"mp3\": \"";
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.flush().await.unwrap();
    let metric = "stemsep_uploads_in_flight 1";
    let mut holding = false;
    for _ in 0..500 {
        let text = app.get("/metrics").await.text().await.unwrap();
        if text.contains(metric) {
            holding = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(holding, "the stalled upload never took its slot");

    let resp = app.post_like_lab_client(&song(47)).await;
    assert_eq!(resp.headers()["retry-after"], "5");
    let msg = expect_error(resp, 503).await;
    assert!(msg.contains("busy"), "{msg}");

    // The stalled client goes away: its slot is free again.
    drop(slow);
    let mut served = false;
    for _ in 0..500 {
        if app.post_like_lab_client(&song(47)).await.status() == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(served);
}
