//! Manifests on disk: a model directory, a single core with its sidecar, discovery, and every
//! rule a manifest must keep before the engine or the API relies on it.

use std::path::Path;

use stemsep_manifest::{Manifest, Weights, MANIFEST_FILE};

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn sidecar(name: &str, version: &str, sources: &str) -> String {
    format!(
        r#"{{"stemsep.format": "1", "stemsep.name": "{name}", "stemsep.version": "{version}",
            "stemsep.sources": "{sources}", "stemsep.sample_rate": "44100", "stemsep.channels": "2",
            "stemsep.segment_samples": "343980", "stemsep.nfft": "4096", "stemsep.hop": "1024"}}"#
    )
}

const BAG: &str = r#"{
  "format": 1, "name": "htdemucs_ft", "version": "demucs-4.1.0:htdemucs_ft", "weights": "pretrained",
  "sources": ["drums", "bass", "other", "vocals"], "sample_rate": 44100, "channels": 2,
  "members": [
    {"file": "a.onnx", "segment_samples": 343980, "weights": [1, 0, 0, 0]},
    {"file": "b.onnx", "segment_samples": 343980, "weights": [0, 1, 1, 1]}
  ]
}"#;

#[test]
fn a_model_directory_resolves_its_members() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("htdemucs_ft");
    std::fs::create_dir(&model).unwrap();
    write(&model.join(MANIFEST_FILE), BAG);
    let m = Manifest::load(&model).unwrap();
    assert_eq!(m.name, "htdemucs_ft");
    assert_eq!(m.members.len(), 2);
    assert_eq!(m.members[1].file, model.join("b.onnx"));
    let card = m.card();
    assert_eq!(card.stems, ["drums", "bass", "other", "vocals"]);
    assert_eq!(card.members, 2);
    assert_eq!(card.weights, Weights::Pretrained);
    assert!((card.segment_seconds - 7.8).abs() < 1e-9);
}

#[test]
fn a_single_core_is_a_one_member_model() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("htdemucs.onnx");
    write(&onnx, "not read by the manifest");
    write(
        &dir.path().join("htdemucs.onnx.json"),
        &sidecar(
            "htdemucs",
            "demucs-4.1.0:955717e8",
            "drums,bass,other,vocals",
        ),
    );
    let m = Manifest::load(&onnx).unwrap();
    assert_eq!(m.members.len(), 1);
    assert_eq!(m.members[0].weights, [1.0; 4]);
    assert_eq!(m.members[0].segment_samples, 343_980);
    assert_eq!(m.weights, Weights::Pretrained);
}

#[test]
fn exports_from_before_the_weights_key_say_what_they_are_by_version() {
    let dir = tempfile::tempdir().unwrap();
    for (file, version, kind) in [
        (
            "a.onnx",
            "demucs-4.1.0:random-init-seed-42",
            Weights::Random,
        ),
        ("b.onnx", "demucs-4.1.0:tiny-seed-0", Weights::Random),
        (
            "c.onnx",
            "demucs-4.1.0:stemsep-train-step-2800",
            Weights::Demo,
        ),
    ] {
        let onnx = dir.path().join(file);
        write(&onnx, "");
        write(
            &dir.path().join(format!("{file}.json")),
            &sidecar("x", version, "drums,bass"),
        );
        assert_eq!(Manifest::load(&onnx).unwrap().weights, kind, "{version}");
    }
}

#[test]
fn broken_manifests_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(MANIFEST_FILE);
    for (change, reason) in [
        (("\"a.onnx\"", "\"../a.onnx\""), "plain .onnx file name"),
        (("\"a.onnx\"", "\"/etc/a.onnx\""), "plain .onnx file name"),
        (("[1, 0, 0, 0]", "[1, 0, 0]"), "3 weights for 4 sources"),
        (("[0, 1, 1, 1]", "[0, 1, 1, 0]"), "sum to zero"),
        (("\"bass\"", "\"drums\""), "appears twice"),
        (("\"bass\"", "\"Bass\""), "lowercase"),
        (
            ("htdemucs_ft\", \"version", "ht demucs\", \"version"),
            "model name",
        ),
        (("\"format\": 1", "\"format\": 2"), "format"),
        (
            (
                "\"segment_samples\": 343980, \"weights\": [1",
                "\"segment_samples\": 0, \"weights\": [1",
            ),
            "empty segment",
        ),
    ] {
        write(&path, &BAG.replace(change.0, change.1));
        let e = Manifest::load(&path).unwrap_err().to_string();
        assert!(e.contains(reason), "{change:?}: {e}");
    }
}

#[test]
fn discovery_lists_directories_and_single_cores_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let bag = dir.path().join("htdemucs_ft");
    std::fs::create_dir(&bag).unwrap();
    write(&bag.join(MANIFEST_FILE), BAG);
    write(&dir.path().join("htdemucs.onnx"), "");
    write(
        &dir.path().join("htdemucs.onnx.json"),
        &sidecar("htdemucs", "v", "drums,bass,other,vocals"),
    );
    // A core without a sidecar is not a model; a broken manifest is reported, not skipped.
    write(&dir.path().join("stray.onnx"), "");
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    write(&broken.join(MANIFEST_FILE), "{");
    let found = Manifest::discover(dir.path()).unwrap();
    let names: Vec<&str> = found
        .iter()
        .filter_map(|m| m.as_ref().ok())
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["htdemucs", "htdemucs_ft"]);
    assert_eq!(found.iter().filter(|m| m.is_err()).count(), 1);
}
