//! A job's other files: `no_<stem>` mixes, FLAC and WAV, other bitrates, zips; made from the
//! masters a worker stored (here the test plays the worker), listed for retention, gone when a
//! stem is removed.

use std::time::Duration;

use serde_json::{json, Value};
use stemsep_common::job::SongHash;

use crate::helpers::{b64, expect_error, song, spawn_app, spawn_app_with, tone_master};

/// The decoded samples of a file, left channel then right.
fn samples(bytes: &[u8]) -> Vec<f32> {
    let audio = stemsep_audio::decode(bytes, Duration::from_secs(60)).unwrap();
    assert_eq!(audio.sample_rate, 44_100);
    audio.channels.concat()
}

/// The masters `helpers::TestApp::finish` stores, by the job's source order (vocals, drums,
/// bass, other).
fn master(i: usize) -> Vec<f32> {
    samples(&tone_master(100.0 * (i + 1) as f32))
        .iter()
        .map(|x| x * 4.0)
        .collect()
}

async fn body(resp: reqwest::Response, kind: &str) -> Vec<u8> {
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], kind);
    resp.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn mixes_and_formats_are_made_once_from_the_masters() {
    let app = spawn_app().await;
    let hash = app.submit(&song(40)).await;
    let lab = app.finish_next_job().await;

    let flac = body(
        app.get(&format!("/apiv1/track/{hash}/no_vocals.flac"))
            .await,
        "audio/flac",
    )
    .await;
    let mut others = master(1);
    for i in [2, 3] {
        others.iter_mut().zip(master(i)).for_each(|(a, b)| *a += b);
    }
    let snr = stemsep_testkit::snr_db(&others, &samples(&flac));
    assert!(
        snr > 100.0,
        "no_vocals.flac is the other stems' sum: {snr:.1} dB"
    );

    // Made once: listed for retention, stored, and served again without the masters.
    let h: SongHash = hash.parse().unwrap();
    let made: Vec<String> = app
        .queue
        .files(&h)
        .await
        .unwrap()
        .iter()
        .map(|r| r.slug())
        .collect();
    assert_eq!(made, ["no_vocals.flac24.rescale.flac"]);
    let output = app.dir.path().join("storage/output");
    for stem in ["vocals", "drums", "bass", "other"] {
        std::fs::remove_file(output.join(format!("{hash}-{stem}.master.flac"))).unwrap();
    }
    let again = body(
        app.get(&format!("/apiv1/track/{hash}/no_vocals.flac"))
            .await,
        "audio/flac",
    )
    .await;
    assert_eq!(again, flac);
    // The lab's MP3s are the worker's, untouched.
    let vocals = body(
        app.get(&format!("/apiv1/track/{hash}/vocals")).await,
        "audio/mpeg",
    )
    .await;
    assert_eq!(vocals, lab[0].1);
    // Anything else needs the masters, which are gone now.
    let msg = expect_error(
        app.get(&format!("/apiv1/track/{hash}/vocals.wav?bits=32"))
            .await,
        404,
    )
    .await;
    assert!(msg.contains("resubmit"), "{msg}");
}

#[tokio::test]
async fn every_format_and_setting_is_a_download_away() {
    let app = spawn_app().await;
    let hash = app.submit(&song(41)).await;
    let lab = app.finish_next_job().await;
    let app = &app;
    let get = |q: &str| {
        let path = format!("/apiv1/track/{hash}/{q}");
        async move { app.get(&path).await }
    };
    let float = body(get("vocals.wav?bits=32&clip=none").await, "audio/wav").await;
    assert_eq!(&float[..4], b"RIFF");
    let snr = stemsep_testkit::snr_db(&master(0), &samples(&float));
    assert!(snr > 120.0, "{snr:.1} dB");
    let sixteen = body(get("vocals.wav?bits=16").await, "audio/wav").await;
    assert!(sixteen.len() < float.len() * 6 / 10);
    let mp3 = body(get("vocals.mp3?bitrate=64").await, "audio/mpeg").await;
    let kbps = mp3.len() as f64 * 8.0 / 0.5 / 1000.0;
    assert!((50.0..90.0).contains(&kbps), "{kbps} kbit/s");
    assert_ne!(mp3, lab[0].1);
    let base = body(get("base.flac?bits=16&clip=clamp").await, "audio/flac").await;
    assert_eq!(
        samples(&base).len(),
        master(2).len(),
        "the lab's alias names bass here too"
    );
    let h: SongHash = hash.parse().unwrap();
    assert_eq!(app.queue.files(&h).await.unwrap().len(), 4);
}

#[tokio::test]
async fn bad_file_requests_are_refused_and_make_nothing() {
    let app = spawn_app().await;
    let queued = app.submit(&song(42)).await;
    let msg = expect_error(
        app.get(&format!("/apiv1/track/{queued}/no_vocals.flac"))
            .await,
        404,
    )
    .await;
    assert!(msg.contains("still queued"), "{msg}");
    let msg = expect_error(app.get(&format!("/apiv1/zip/{queued}")).await, 404).await;
    assert!(msg.contains("still queued"), "{msg}");
    app.finish_next_job().await;
    for (path, status, says) in [
        ("vocals.flac?bits=32", 400, "FLAC"),
        ("vocals.mp3?bitrate=100", 400, "bitrate"),
        ("vocals.wav?bits=20", 400, "bits"),
        ("vocals.flac?clip=loud", 400, "clip"),
        ("vocals.flac?volume=11", 400, "accepted"),
        ("vocals.flac?format=wav", 400, "extension"),
        ("vocals.ogg", 400, "malformed"),
        ("no_piano.flac", 404, "vocals, drums, bass, other"),
        ("piano.wav", 404, "gives no such stem"),
    ] {
        let msg = expect_error(
            app.get(&format!("/apiv1/track/{queued}/{path}")).await,
            status,
        )
        .await;
        assert!(msg.contains(says), "{path}: {msg}");
    }
    let msg = expect_error(
        app.get(&format!("/apiv1/zip/{queued}?format=ogg")).await,
        400,
    )
    .await;
    assert!(msg.contains("mp3, flac or wav"), "{msg}");
    let h: SongHash = queued.parse().unwrap();
    assert!(app.queue.files(&h).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_zip_holds_the_jobs_tracks() {
    let app = spawn_app().await;
    let hash = app.submit(&song(43)).await;
    let lab = app.finish_next_job().await;
    let zipped = body(
        app.get(&format!("/apiv1/zip/{hash}")).await,
        "application/zip",
    )
    .await;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zipped)).unwrap();
    assert_eq!(archive.len(), 4);
    for (i, (track, mp3)) in lab.iter().enumerate() {
        let mut file = archive.by_index(i).unwrap();
        assert_eq!(file.name().unwrap(), format!("{hash}/{}.mp3", track.name()));
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).unwrap();
        assert_eq!(&bytes, mp3, "the worker's own MP3");
    }
    let zipped = body(
        app.get(&format!("/apiv1/zip/{hash}?format=wav&bits=16"))
            .await,
        "application/zip",
    )
    .await;
    let archive = zip::ZipArchive::new(std::io::Cursor::new(zipped)).unwrap();
    let names: Vec<String> = archive
        .file_names()
        .map(|n| n.unwrap().into_owned())
        .collect();
    assert_eq!(names.len(), 4);
    assert!(names.iter().all(|n| n.ends_with(".wav")), "{names:?}");
}

#[tokio::test]
async fn a_removed_stem_is_gone_in_every_format() {
    let app = spawn_app().await;
    let mp3 = song(44);
    let hash = app.submit(&mp3).await;
    app.finish_next_job().await;
    let app = &app;
    let get = |q: &str| {
        let path = format!("/apiv1/track/{hash}/{q}");
        async move { app.get(&path).await }
    };
    assert_eq!(get("no_drums.flac").await.status(), 200);
    assert_eq!(get("drums.wav").await.status(), 200);
    let removed = app.delete(&format!("/apiv1/remove/{hash}/vocals")).await;
    assert_eq!(removed.status(), 200);
    for gone in ["vocals", "vocals.flac", "no_drums.flac"] {
        let msg = expect_error(get(gone).await, 404).await;
        assert!(msg.contains("removed"), "{gone}: {msg}");
    }
    // A file without the removed stem is made again.
    assert_eq!(get("drums.wav").await.status(), 200);
    let reply: Value = app
        .post_json(&json!({"mp3": b64(&mp3)}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(reply["hash"], hash.as_str());
    assert!(
        reply["reason"].as_str().unwrap().contains("re-enqueued"),
        "{reply}"
    );
}

#[tokio::test]
async fn submissions_choose_their_files_and_bad_choices_are_400() {
    let app = spawn_app().await;
    let mp3 = song(45);
    for (extra, says) in [
        (json!({"formats": ["ogg"]}), "mp3, flac or wav"),
        (json!({"formats": ["flac"], "bits": 32}), "FLAC"),
        (json!({"mp3_bitrate": 100}), "mp3_bitrate"),
        (json!({"bits": 8}), "bits"),
        (json!({"clip_mode": "soft"}), "rescale, clamp or none"),
        (json!({"shifts": 11}), "at most 10"),
        (json!({"two_stems": "guitar"}), "vocals, drums, bass, other"),
        (json!({"two_stems": "no_vocals"}), "stem name"),
        (json!({"two_stems": "Vocals"}), "stem name"),
        (json!({"formats": "flac"}), "invalid JSON"),
    ] {
        let mut req = extra.clone();
        req["mp3"] = b64(&mp3).into();
        let msg = expect_error(app.post_json(&req).await, 400).await;
        assert!(msg.contains(says), "{extra}: {msg}");
    }
    assert!(
        app.queue.waiting().await.unwrap().is_empty(),
        "no job for a 400"
    );

    let plain = app.submit(&mp3).await;
    let reply: Value = app
        .post_json(
            &json!({"mp3": b64(&mp3), "shifts": 2, "two_stems": "vocals",
                           "formats": ["wav", "flac"], "bits": 16, "mp3_bitrate": 128,
                           "clip_mode": "clamp"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let shifted = reply["hash"].as_str().unwrap();
    assert_ne!(shifted, plain, "shifts change the stems, so the hash");
    let s = app.status(shifted).await;
    assert_eq!(s["shifts"], 2);
    assert_eq!(s["two_stems"], "vocals");
    assert_eq!(s["formats"], json!(["mp3", "wav", "flac"]));
    assert_eq!(
        (s["bits"].clone(), s["mp3_bitrate"].clone()),
        (json!(16), json!(128))
    );
    assert_eq!(s["clip_mode"], "clamp");
    assert_eq!(s["stems"], json!(["vocals", "no_vocals"]));
    // Without shifts the hash is the lab's, whatever the files asked for.
    let reply: Value = app
        .post_json(&json!({"mp3": b64(&mp3), "formats": ["flac"], "two_stems": "drums"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(reply["hash"], plain.as_str());
}

#[tokio::test]
async fn retention_deletes_the_made_files_too() {
    let app = spawn_app_with(|s| s.redis.retention_secs = 1).await;
    let hash = app.submit(&song(46)).await;
    app.finish_next_job().await;
    assert_eq!(
        app.get(&format!("/apiv1/track/{hash}/no_bass.wav"))
            .await
            .status(),
        200
    );
    let output = app.dir.path().join("storage/output");
    let left = || std::fs::read_dir(&output).unwrap().count();
    assert_eq!(left(), 9, "4 MP3s, 4 masters, 1 mix");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while left() > 0
        || app
            .queue
            .job(&hash.parse().unwrap())
            .await
            .unwrap()
            .is_some()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{} objects left",
            left()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let h: SongHash = hash.parse().unwrap();
    assert!(app.queue.files(&h).await.unwrap().is_empty());
}
