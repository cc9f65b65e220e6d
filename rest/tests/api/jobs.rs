//! POST /apiv1/separate, GET /apiv1/queue, GET /apiv1/status.

use serde_json::{json, Value};
use stemsep_audio::{ClipMode, Depth, Format};
use stemsep_common::job::{JobState, SongHash, Track};
use stemsep_common::queue::Failure;
use stemsep_common::storage::ObjectKey;

use crate::helpers::{b64, expect_error, lab_hash, song, spawn_app, spawn_app_with};

#[tokio::test]
async fn stock_client_submission_is_enqueued_with_the_lab_hash() {
    let app = spawn_app().await;
    let mp3 = song(1);
    let resp = app.post_like_lab_client(&mp3).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"hash": lab_hash(&mp3), "reason": "Song enqueued for separation"})
    );

    // Input stored before the queue entry; record and list agree.
    let hash: SongHash = lab_hash(&mp3).parse().unwrap();
    let job = app.queue.job(&hash).await.unwrap().unwrap();
    assert_eq!(app.storage.get(&ObjectKey::input(&job)).await.unwrap(), mp3);
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.model, "htdemucs");
    assert_eq!(job.callback.unwrap().url, "http://localhost:5000/");

    let resp = app.get_queue_like_lab_client().await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, json!({"queue": [lab_hash(&mp3)]}));
}

#[tokio::test]
async fn every_kind_of_audio_is_accepted_and_a_cut_one_refused() {
    // The server's audio check and the worker's decoder are one function (stemsep-audio): what
    // one accepts, the other reads. WAV and FLAC are written here; Ogg Vorbis and AAC (MP4 and
    // ADTS) are the audio crate's committed fixtures.
    let app = spawn_app().await;
    let tone: Vec<f32> = (0..44_100)
        .map(|i| (f64::from(i) * 440.0 * std::f64::consts::TAU / 44_100.0).sin() as f32 * 0.25)
        .collect();
    let stereo = [tone.clone(), tone];
    let encode = |format: Format| format.encode(&stereo, 44_100, ClipMode::None).unwrap();
    let fixture = |name: &str| {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../common/audio/tests/data");
        std::fs::read(dir.join(name)).unwrap()
    };
    for (kind, bytes) in [
        ("WAV", encode(Format::Wav(Depth::Int16))),
        ("FLAC", encode(Format::Flac(Depth::Int24))),
        ("Ogg Vorbis", fixture("song.ogg")),
        ("M4A", fixture("song.m4a")),
        ("AAC", fixture("song.aac")),
    ] {
        // ADTS declares no length: a third of it is a shorter song; a cut inside its first
        // frame is not audio.
        let cut = match kind {
            "AAC" => &bytes[..200],
            _ => &bytes[..bytes.len() / 3],
        };
        let msg = expect_error(app.post_json(&json!({"mp3": b64(cut)})).await, 422).await;
        assert!(
            msg.contains("not decodable audio"),
            "{kind} cut short: {msg}"
        );
        let cut_hash: SongHash = lab_hash(cut).parse().unwrap();
        assert!(
            app.queue.job(&cut_hash).await.unwrap().is_none(),
            "{kind}: no job for the cut file"
        );

        let resp = app.post_json(&json!({"mp3": b64(&bytes)})).await;
        assert_eq!(resp.status(), 200, "{kind}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body["hash"],
            lab_hash(&bytes),
            "{kind}: the hash is the upload's"
        );
        let hash: SongHash = lab_hash(&bytes).parse().unwrap();
        let job = app.queue.job(&hash).await.unwrap().unwrap();
        assert_eq!(
            app.storage.get(&ObjectKey::input(&job)).await.unwrap(),
            bytes,
            "{kind}"
        );
    }
    assert_eq!(app.queue.waiting().await.unwrap().len(), 5);
}

#[tokio::test]
async fn resubmission_is_idempotent_and_says_why() {
    let app = spawn_app().await;
    let mp3 = song(2);
    let hash = app.submit(&mp3).await;
    let again: Value = app.post_like_lab_client(&mp3).await.json().await.unwrap();
    assert_eq!(again["hash"], hash);
    assert!(
        again["reason"].as_str().unwrap().contains("already queued"),
        "{again}"
    );
    let queue: Value = app.get("/apiv1/queue").await.json().await.unwrap();
    assert_eq!(queue["queue"].as_array().unwrap().len(), 1, "no second job");

    // Running.
    let claim = app.claim_next().await;
    let again: Value = app.post_like_lab_client(&mp3).await.json().await.unwrap();
    assert!(
        again["reason"]
            .as_str()
            .unwrap()
            .contains("being separated"),
        "{again}"
    );
    assert!(app.queue.release(&claim).await.unwrap());

    // Done with all stems.
    app.finish_next_job().await;
    let again: Value = app.post_like_lab_client(&mp3).await.json().await.unwrap();
    assert!(
        again["reason"]
            .as_str()
            .unwrap()
            .contains("already separated"),
        "{again}"
    );
    assert!(app.queue.waiting().await.unwrap().is_empty());

    // Done but a stem removed: re-enqueued.
    let resp = app.delete(&format!("/apiv1/remove/{hash}/drums")).await;
    assert_eq!(resp.status(), 200);
    let again: Value = app.post_like_lab_client(&mp3).await.json().await.unwrap();
    assert_eq!(again["hash"], hash);
    assert!(
        again["reason"]
            .as_str()
            .unwrap()
            .contains("removed; re-enqueued"),
        "{again}"
    );
    assert_eq!(app.queue.waiting().await.unwrap(), vec![hash.clone()]);
}

#[tokio::test]
async fn a_failed_job_is_retried_on_resubmission() {
    let app = spawn_app_with(|s| s.redis.max_attempts = 1).await;
    let mp3 = song(3);
    let hash = app.submit(&mp3).await;
    let claim = app.claim_next().await;
    app.queue
        .fail(&claim, "model exploded", Failure::Transient)
        .await
        .unwrap();

    let status = app.status(&hash).await;
    assert_eq!(status["state"], "failed");
    assert_eq!(status["error"], "model exploded");

    let again: Value = app.post_like_lab_client(&mp3).await.json().await.unwrap();
    assert!(
        again["reason"]
            .as_str()
            .unwrap()
            .contains("failed; re-enqueued"),
        "{again}"
    );
    let status = app.status(&hash).await;
    assert_eq!(status["state"], "queued");
    assert_eq!(status["attempts"], 0);
}

#[tokio::test]
async fn status_reports_progress_and_tracks() {
    let app = spawn_app().await;
    let hash = app.submit(&song(4)).await;
    let status = app.status(&hash).await;
    assert_eq!(
        status,
        json!({"hash": hash, "state": "queued", "progress": 0, "attempts": 0, "tracks": [],
               "stems": ["vocals", "drums", "bass", "other"], "error": null,
               "callback_status": null, "model": "htdemucs", "two_stems": null, "shifts": 0,
               "formats": ["mp3"], "mp3_bitrate": 320, "bits": 24, "clip_mode": "rescale"})
    );
    let claim = app.claim_next().await;
    assert!(app.queue.set_progress(&claim, 37).await.unwrap());
    let status = app.status(&hash).await;
    assert_eq!(
        (&status["state"], &status["progress"]),
        (&json!("running"), &json!(37))
    );

    app.finish(&claim).await;
    let status = app.status(&hash).await;
    assert_eq!(status["state"], "done");
    assert_eq!(status["progress"], 100);
    assert_eq!(status["tracks"], json!(Track::LAB));

    let unknown = "0".repeat(56);
    expect_error(app.get(&format!("/apiv1/status/{unknown}")).await, 404).await;
    expect_error(app.get("/apiv1/status/not-a-hash").await, 400).await;
}

#[tokio::test]
async fn models_are_checked_and_enter_the_hash() {
    let app = spawn_app().await;
    let mp3 = song(5);
    let body: Value = app
        .post_json(&json!({"mp3": b64(&mp3), "model": "htdemucs_ft"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["hash"],
        SongHash::compute(&mp3, "htdemucs_ft").to_string()
    );
    assert_ne!(body["hash"], lab_hash(&mp3));
    let explicit_default: Value = app
        .post_json(&json!({"mp3": b64(&mp3), "model": "htdemucs"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(explicit_default["hash"], lab_hash(&mp3));
    assert_eq!(explicit_default["reason"], "Song enqueued for separation");

    let msg = expect_error(
        app.post_json(&json!({"mp3": b64(&mp3), "model": "mdx_extra"}))
            .await,
        400,
    )
    .await;
    assert!(msg.contains("htdemucs"), "names the offered models: {msg}");
}

#[tokio::test]
async fn bad_inputs_get_json_errors_and_leave_nothing_behind() {
    let app = spawn_app().await;
    let mp3 = song(6);

    // Invalid JSON, wrong shapes, bad base64 → 400.
    expect_error(app.post_raw("{\"mp3\": ").await, 400).await;
    expect_error(app.post_raw("null").await, 400).await;
    expect_error(app.post_json(&json!({"song": b64(&mp3)})).await, 400).await;
    expect_error(app.post_json(&json!({"mp3": 12})).await, 400).await;
    let msg = expect_error(app.post_json(&json!({"mp3": "not base64 !!"})).await, 400).await;
    assert!(msg.contains("base64"), "{msg}");

    // Callback URLs must be http(s); private ones are accepted here.
    for bad in [
        "ftp://example.com/x",
        "not a url",
        "javascript:alert(1)",
        "http://",
    ] {
        let body = json!({"mp3": b64(&mp3), "callback": {"url": bad, "data": {}}});
        expect_error(app.post_json(&body).await, 400).await;
    }
    expect_error(
        app.post_json(&json!({"mp3": b64(&mp3), "callback": {"data": {}}}))
            .await,
        400,
    )
    .await;

    // Valid base64 of things that are not decodable audio → 422. The WAV header declares 1 MiB
    // of samples and 2 KiB follow: truncated, as the worker's decoder would find.
    let wav_header = b"RIFF\x24\x00\x10\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x02\x00\x44\xac\x00\x00\x10\xb1\x02\x00\x04\x00\x10\x00data\x00\x00\x10\x00";
    let mut wav = wav_header.to_vec();
    wav.extend(std::iter::repeat_n(0u8, 2048));
    let random: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for junk in [
        b"just some text".to_vec(),
        wav,
        random,
        Vec::new(),
        mp3[..40].to_vec(),
    ] {
        let msg = expect_error(app.post_json(&json!({"mp3": b64(&junk)})).await, 422).await;
        assert!(msg.contains("not decodable audio"), "{msg}");
    }

    // Nothing was stored or queued by any of that.
    assert!(app.queue.waiting().await.unwrap().is_empty());
    let stored = std::fs::read_dir(app.dir.path().join("storage"))
        .unwrap()
        .count();
    assert_eq!(stored, 0, "no objects written");
}

#[tokio::test]
async fn overlong_songs_are_refused_with_the_limit() {
    let app = spawn_app().await;
    // Two hours of real MPEG-2.5 frames (8 kHz, 8 kbit/s silence) in ~7 MB: a minute encoded
    // by LAME, repeated.
    let two_hours = stemsep_testkit::silent_mp3(60.0).repeat(120);
    let msg = expect_error(app.post_json(&json!({"mp3": b64(&two_hours)})).await, 422).await;
    assert!(msg.contains("1200 s") && msg.contains("20 min"), "{msg}");
    assert!(app.queue.waiting().await.unwrap().is_empty());

    // A short one at the same rate is fine.
    let resp = app
        .post_json(&json!({"mp3": b64(&stemsep_testkit::silent_mp3(60.0))}))
        .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn bodies_over_16_mib_are_413() {
    let app = spawn_app().await;
    let filler = "A".repeat(17 * 1024 * 1024);
    let body = format!("{{\"mp3\": \"{filler}\"}}");
    let msg = expect_error(app.post_raw(body).await, 413).await;
    assert!(msg.contains("16 MiB"), "{msg}");

    // Just under the limit is read (and then judged on content).
    let almost = "A".repeat(15 * 1024 * 1024);
    let resp = app.post_raw(format!("{{\"mp3\": \"{almost}\"}}")).await;
    assert_eq!(resp.status(), 422, "15 MiB is within the limit");
}
