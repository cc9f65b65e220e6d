//! The real `stemsep-rest` binary logs every API call to the Redis list `logging`, tagged
//! `<hostname>.rest.<level>`.

use std::process::{Command, Stdio};
use std::time::Duration;

use redis::AsyncCommands;
use stemsep_testkit::{free_port, unique_prefix, RedisServer};

/// Kills the child process on drop, even when an assertion fails.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_pushes_tagged_lines_to_the_logging_list() {
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let prefix = unique_prefix("binlog");
    let _child = Child(
        Command::new(env!("CARGO_BIN_EXE_stemsep-rest"))
            .env("STEMSEP_REDIS_URL", redis.url())
            .env("STEMSEP_KEY_PREFIX", &prefix)
            .env("STEMSEP_STORAGE_DIR", dir.path().join("storage"))
            .env("STEMSEP_BIND", format!("127.0.0.1:{port}"))
            .env("STEMSEP_LOG_LINES", "50")
            // The test polls faster than the default rate allows one address.
            .env("STEMSEP_RATE_PER_MIN", "0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/apiv1/queue");
    let mut up = false;
    for _ in 0..100 {
        if client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "stemsep-rest did not come up");
    for _ in 0..60 {
        client.get(&url).send().await.unwrap();
    }

    let conn = redis::Client::open(redis.url()).unwrap();
    let mut c = conn.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{prefix}logging");
    let host = std::process::Command::new("hostname")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let mut lines: Vec<String> = Vec::new();
    for _ in 0..50 {
        lines = c.lrange(&key, 0, -1).await.unwrap();
        if lines.len() >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lines.len(), 50, "bounded by --log-lines: {lines:?}");
    let newest = &lines[0];
    assert!(
        newest.contains(".rest.info:request method=GET path=/apiv1/queue status=200"),
        "{newest}"
    );
    if let Ok(host) = host {
        assert!(newest.starts_with(&format!("{host}.rest.")), "{newest}");
    }
    // RUST_LOG only filters stderr; debug lines of our crates still reach Redis.
    assert!(
        lines.iter().any(|l| l.contains(".rest.debug:queue listed")),
        "{lines:?}"
    );
}
