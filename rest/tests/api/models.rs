//! GET /apiv1/models and what follows from a model's own stems: what workers announce is served,
//! a six-stem job has six tracks, and the lab's names keep working for four-stem models.

use serde_json::{json, Value};
use stemsep_common::job::SongHash;
use stemsep_common::registry::{self, ModelCard};
use stemsep_manifest::Weights;

use crate::helpers::{b64, expect_error, song, spawn_app, spawn_app_with};

fn card(name: &str, stems: &[&str], members: usize) -> ModelCard {
    ModelCard {
        name: name.into(),
        stems: stems.iter().map(|s| s.to_string()).collect(),
        segment_seconds: 7.8,
        members,
        weights: Weights::Random,
        sample_rate: 44_100,
    }
}

const FOUR: [&str; 4] = ["drums", "bass", "other", "vocals"];
const SIX: [&str; 6] = ["drums", "bass", "other", "vocals", "guitar", "piano"];

#[tokio::test]
async fn served_models_are_what_workers_announce_within_the_configured_names() {
    // The test server allows htdemucs and htdemucs_ft (STEMSEP_MODELS).
    let app = spawn_app().await;
    // Before any worker has announced a model: the configured names, their stems not yet known.
    let body: Value = app.get("/apiv1/models").await.json().await.unwrap();
    assert_eq!(body["default"], "htdemucs");
    assert_eq!(body["models"][0]["name"], "htdemucs");
    assert_eq!(body["models"][1]["name"], "htdemucs_ft");
    assert_eq!(body["models"][0]["stems"], json!([]));

    registry::announce(
        &app.queue,
        &[card("htdemucs", &FOUR, 1), card("htdemucs_6s", &SIX, 1)],
    )
    .await
    .unwrap();
    // Announced and allowed: htdemucs only (htdemucs_6s is not in STEMSEP_MODELS, htdemucs_ft was
    // not announced), with its stems in the API's order.
    let body: Value = app.get("/apiv1/models").await.json().await.unwrap();
    assert_eq!(
        body["models"],
        json!([{"name": "htdemucs", "stems": ["vocals", "drums", "bass", "other"],
                "segment_seconds": 7.8, "members": 1, "weights": "random"}])
    );
    let msg = expect_error(
        app.post_json(&json!({"mp3": b64(&song(30)), "model": "htdemucs_ft"}))
            .await,
        400,
    )
    .await;
    assert!(msg.contains("this server offers htdemucs"), "{msg}");
}

#[tokio::test]
async fn a_six_stem_model_gives_six_fetchable_tracks() {
    // STEMSEP_MODELS empty: every announced model is served.
    let app = spawn_app_with(|s| s.models = Vec::new()).await;
    registry::announce(
        &app.queue,
        &[card("htdemucs", &FOUR, 1), card("htdemucs_6s", &SIX, 1)],
    )
    .await
    .unwrap();
    let mp3 = song(31);
    let reply: Value = app
        .post_json(&json!({"mp3": b64(&mp3), "model": "htdemucs_6s"}))
        .await
        .json()
        .await
        .unwrap();
    let hash = reply["hash"].as_str().unwrap().to_owned();
    assert_eq!(hash, SongHash::compute(&mp3, "htdemucs_6s").to_string());
    let status: Value = app
        .get(&format!("/apiv1/status/{hash}"))
        .await
        .json()
        .await
        .unwrap();
    let six = json!(["vocals", "drums", "bass", "other", "guitar", "piano"]);
    assert_eq!(status["stems"], six);
    assert_eq!(status["tracks"], json!([]));

    let stems = app.finish_next_job().await;
    assert_eq!(stems.len(), 6);
    let status: Value = app
        .get(&format!("/apiv1/status/{hash}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["tracks"], six);
    for (track, bytes) in &stems {
        for name in [track.name().to_owned(), format!("{track}.mp3")] {
            let resp = app.get(&format!("/apiv1/track/{hash}/{name}")).await;
            assert_eq!(resp.status(), 200, "{name}");
            assert_eq!(&resp.bytes().await.unwrap()[..], &bytes[..], "{name}");
        }
    }
    // The lab's alias still names bass; a stem the model lacks is a 404 that lists its stems.
    assert_eq!(
        app.get(&format!("/apiv1/track/{hash}/base.mp3"))
            .await
            .status(),
        200
    );
    let msg = expect_error(app.get(&format!("/apiv1/track/{hash}/strings")).await, 404).await;
    assert!(msg.contains("guitar, piano"), "{msg}");

    // The same song with the default model: the lab's four, and no guitar.
    let lab: Value = app
        .post_json(&json!({"mp3": b64(&mp3)}))
        .await
        .json()
        .await
        .unwrap();
    app.finish_next_job().await;
    let lab_hash = lab["hash"].as_str().unwrap();
    let msg = expect_error(
        app.get(&format!("/apiv1/track/{lab_hash}/guitar.mp3"))
            .await,
        404,
    )
    .await;
    assert!(msg.contains("gives no such stem"), "{msg}");
}
