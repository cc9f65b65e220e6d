//! GET /apiv1/track (whole, ranges, aliases) and GET|DELETE /apiv1/remove.

use crate::helpers::{expect_error, song, spawn_app};

#[tokio::test]
async fn stems_download_whole_with_headers_and_aliases() {
    let app = spawn_app().await;
    let hash = app.submit(&song(10)).await;
    let stems = app.finish_next_job().await;
    for (track, bytes) in &stems {
        for name in [track.name().to_owned(), format!("{}.mp3", track.name())] {
            let resp = app.get(&format!("/apiv1/track/{hash}/{name}")).await;
            assert_eq!(resp.status(), 200);
            let h = resp.headers();
            assert_eq!(h["content-type"], "audio/mpeg");
            assert_eq!(h["accept-ranges"], "bytes");
            assert_eq!(h["content-length"], bytes.len().to_string());
            assert_eq!(
                h["content-disposition"],
                format!("attachment; filename=\"{hash}-{}.mp3\"", track.name())
            );
            assert_eq!(resp.bytes().await.unwrap(), bytes.as_slice());
        }
    }
    let bass = &stems.iter().find(|(t, _)| t.name() == "bass").unwrap().1;
    let resp = app.get(&format!("/apiv1/track/{hash}/base.mp3")).await;
    assert_eq!(resp.status(), 200, "the lab's spelling of bass");
    assert_eq!(resp.bytes().await.unwrap(), bass.as_slice());
}

#[tokio::test]
async fn ranges_are_served_as_206() {
    let app = spawn_app().await;
    let hash = app.submit(&song(11)).await;
    let stems = app.finish_next_job().await;
    let vocals = &stems[0].1;
    let n = vocals.len();
    let url = app.url(&format!("/apiv1/track/{hash}/vocals"));
    let get = |range: &'static str| app.client.get(&url).header("range", range).send();

    let resp = get("bytes=100-199").await.unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes 100-199/{n}")
    );
    assert_eq!(resp.headers()["content-length"], "100");
    assert_eq!(resp.bytes().await.unwrap(), &vocals[100..200]);

    let resp = get("bytes=-50").await.unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes {}-{}/{n}", n - 50, n - 1)
    );
    assert_eq!(resp.bytes().await.unwrap(), &vocals[n - 50..]);

    let resp = get("bytes=1000-").await.unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap(), &vocals[1000..]);

    let resp = get("bytes=999999999-").await.unwrap();
    assert_eq!(resp.headers()["content-range"], format!("bytes */{n}"));
    expect_error(resp, 416).await;

    // Several ranges are allowed to be answered with the whole object.
    let resp = get("bytes=0-1,5-6").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), vocals.as_slice());

    // The largest end a client can write: clamped to the stem, never incremented past u64::MAX
    // (which panicked the debug build `make run` runs).
    let resp = get("bytes=0-18446744073709551615").await.unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes 0-{}/{n}", n - 1)
    );
    assert_eq!(resp.bytes().await.unwrap(), vocals.as_slice());
}

#[tokio::test]
async fn unknown_songs_and_tracks_are_404() {
    let app = spawn_app().await;
    let unknown = "ab".repeat(28);
    let msg = expect_error(
        app.get(&format!("/apiv1/track/{unknown}/vocals")).await,
        404,
    )
    .await;
    assert!(msg.contains("no such song"), "{msg}");

    let hash = app.submit(&song(12)).await;
    let msg = expect_error(
        app.get(&format!("/apiv1/track/{hash}/drums.mp3")).await,
        404,
    )
    .await;
    assert!(msg.contains("still queued"), "{msg}");
    app.finish_next_job().await;
    let msg = expect_error(app.get(&format!("/apiv1/track/{hash}/piano")).await, 404).await;
    assert!(
        msg.contains("gives no such stem") && msg.contains("vocals, drums, bass, other"),
        "{msg}"
    );
    expect_error(
        app.get(&format!("/apiv1/track/{hash}/piano.mp3")).await,
        404,
    )
    .await;
    expect_error(app.get("/apiv1/nothing-here").await, 404).await;
}

#[tokio::test]
async fn path_tricks_are_400_and_touch_nothing_outside_storage() {
    let app = spawn_app().await;
    let hash = app.submit(&song(13)).await;
    app.finish_next_job().await;
    // A file next to the storage directory that a traversal would reach.
    std::fs::write(app.dir.path().join("secret.mp3"), b"secret").unwrap();
    let long = "a".repeat(5000);
    let tricks = [
        format!("/apiv1/track/{hash}/../secret.mp3"),
        format!("/apiv1/track/{hash}/%2e%2e/%2e%2e/secret.mp3"),
        format!("/apiv1/track/{hash}/..%2f..%2fsecret.mp3"),
        format!("/apiv1/track/{hash}/vocals/extra"),
        format!("/apiv1/track/{hash}/vocals%00.mp3"),
        format!("/apiv1/track/{hash}/{long}"),
        "/apiv1/track/../../secret/vocals".to_owned(),
        "/apiv1/track/%2e%2e%2f%2e%2e/vocals".to_owned(),
        format!("/apiv1/track/{hash}0/vocals"),
        format!("/apiv1/track/{long}/vocals"),
        format!("/apiv1/remove/{hash}/..%2fvocals.mp3"),
        "/apiv1/remove/..%2f..%2fsecret/vocals".to_owned(),
        "/apiv1/status/..%2f..%2fsecret".to_owned(),
    ];
    for path in &tricks {
        let (status, body) = app.raw_get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("\"error\""), "{path}: {body}");
    }
    assert_eq!(
        std::fs::read(app.dir.path().join("secret.mp3")).unwrap(),
        b"secret"
    );
    // The real stems are untouched.
    assert_eq!(
        app.get(&format!("/apiv1/track/{hash}/vocals"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn removal_by_get_and_delete() {
    let app = spawn_app().await;
    let hash = app.submit(&song(14)).await;
    app.finish_next_job().await;

    let resp = app.get(&format!("/apiv1/remove/{hash}/vocals.mp3")).await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["hash"], hash);
    assert_eq!(body["track"], "vocals");
    let resp = app.delete(&format!("/apiv1/remove/{hash}/base")).await;
    assert_eq!(resp.status(), 200);

    let msg = expect_error(app.get(&format!("/apiv1/track/{hash}/vocals")).await, 404).await;
    assert!(msg.contains("removed"), "{msg}");
    expect_error(
        app.delete(&format!("/apiv1/remove/{hash}/vocals")).await,
        404,
    )
    .await;
    expect_error(
        app.delete(&format!("/apiv1/remove/{hash}/piano")).await,
        404,
    )
    .await;

    let status = app.status(&hash).await;
    assert_eq!(status["tracks"], serde_json::json!(["drums", "other"]));
}

#[tokio::test]
async fn the_gcs_backend_serves_the_same_api() {
    let gcs = stemsep_testkit::FakeGcs::start().expect("fake-gcs-server (run `make py-deps`)");
    gcs.bucket("stemsep-test").unwrap();
    let endpoint = gcs.endpoint();
    let app = crate::helpers::spawn_app_with(|s| {
        s.storage.storage = stemsep_common::config::Backend::Gcs;
        s.storage.gcs_bucket = "stemsep-test".into();
        s.storage.gcs_endpoint = endpoint;
    })
    .await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let hash = app.submit(&song(15)).await;
    let stems = app.finish_next_job().await;
    let other = &stems.iter().find(|(t, _)| t.name() == "other").unwrap().1;
    let resp = app.get(&format!("/apiv1/track/{hash}/other.mp3")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], other.len().to_string());
    assert_eq!(resp.bytes().await.unwrap(), other.as_slice());
    let resp = app
        .client
        .get(app.url(&format!("/apiv1/track/{hash}/other")))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap(), &other[10..20]);
    assert_eq!(
        app.delete(&format!("/apiv1/remove/{hash}/other"))
            .await
            .status(),
        200
    );
    expect_error(app.get(&format!("/apiv1/track/{hash}/other")).await, 404).await;
    drop(gcs);
    let health: serde_json::Value = app.get("/healthz").await.json().await.unwrap();
    assert_ne!(health["storage"], "ok", "a dead emulator fails readiness");
}
