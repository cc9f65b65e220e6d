//! The Redis log layer against a real redis-server: line format, the bound, and dropping (not
//! blocking) while Redis is down.

use std::time::Duration;

use redis::AsyncCommands;
use stemsep_common::logging::{forwarded, RedisLogLayer};
use stemsep_common::queue::{Queue, QueueSettings};
use stemsep_testkit::{unique_prefix, RedisServer};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

fn queue(redis: &RedisServer) -> Queue {
    Queue::new(QueueSettings {
        url: redis.url(),
        prefix: unique_prefix("logging"),
        ..QueueSettings::default()
    })
    .unwrap()
}

async fn lines(q: &Queue) -> Vec<String> {
    let mut c = q.conn().await.unwrap();
    c.lrange(q.keys().logging(), 0, -1).await.unwrap()
}

async fn wait_for(q: &Queue, n: usize) -> Vec<String> {
    for _ in 0..100 {
        let l = lines(q).await;
        if l.len() >= n {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lines(q).await
}

#[tokio::test]
async fn lines_are_tagged_bounded_and_newest_first() {
    let redis = RedisServer::start().unwrap();
    let q = queue(&redis);
    let (layer, forwarder) = RedisLogLayer::with_host(q.clone(), "box1", "rest", 5);
    let stats = layer.stats();
    tokio::spawn(forwarder.run());
    let subscriber = tracing_subscriber::registry()
        .with(layer.with_filter(tracing_subscriber::filter::filter_fn(forwarded)));
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(target: "stemsep_rest::routes", route = "/apiv1/queue", "answered {}", 200);
        tracing::debug!(target: "stemsep_rest", "detail");
        tracing::trace!(target: "stemsep_rest", "too fine: never forwarded");
        tracing::info!(target: "hyper::proto", "not ours: never forwarded");
    });
    let got = wait_for(&q, 2).await;
    assert_eq!(
        got,
        vec![
            "box1.rest.debug:detail".to_string(),
            "box1.rest.info:answered 200 route=/apiv1/queue".to_string()
        ]
    );

    let (layer, forwarder) = RedisLogLayer::with_host(q.clone(), "box1", "rest", 5);
    tokio::spawn(forwarder.run());
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..20 {
            tracing::info!(target: "stemsep_worker", "line {i}");
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = lines(&q).await;
    assert_eq!(got.len(), 5, "LTRIM keeps the newest max_lines: {got:?}");
    assert_eq!(got[0], "box1.rest.info:line 19");
    assert_eq!(stats.dropped(), 0);
}

#[tokio::test]
async fn redis_down_drops_and_counts_without_blocking() {
    let mut redis = RedisServer::start().unwrap();
    let q = queue(&redis);
    let (layer, forwarder) = RedisLogLayer::with_host(q.clone(), "box2", "worker", 100);
    let stats = layer.stats();
    tokio::spawn(forwarder.run());
    redis.kill();
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..10_000 {
            tracing::info!(target: "stemsep_worker", "line {i}");
        }
    });
    for _ in 0..100 {
        if stats.dropped() + stats.sent() == 10_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stats.dropped() > 0);
    assert_eq!(stats.sent(), 0);
    assert_eq!(stats.dropped(), 10_000, "every line is accounted for");
}
