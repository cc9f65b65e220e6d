//! One contract, two backends: every `Storage` implementation must pass `contract`.
//! The GCS run talks to a real fake-gcs-server (see `stemsep_testkit::FakeGcs`).

use bytes::Bytes;
use futures::StreamExt;
use stemsep_common::job::{Job, SongHash, Track, DEFAULT_MODEL};
use stemsep_common::storage::{GcsStorage, LocalStorage, ObjectKey, ObjectReader, Storage};
use stemsep_common::Error;
use stemsep_testkit::{tone_mp3, FakeGcs};

async fn collect(r: ObjectReader) -> Vec<u8> {
    let mut out = Vec::new();
    let mut body = r.body;
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    out
}

/// What every backend promises. `seed` keeps runs against one shared backend apart.
async fn contract(s: &dyn Storage, seed: u64) {
    s.check().await.expect("check on a healthy backend");

    let mp3 = tone_mp3(330.0, 0.5, seed);
    let hash = SongHash::compute(&mp3, DEFAULT_MODEL);
    let input = ObjectKey::input(&Job::new(hash.clone(), DEFAULT_MODEL.into(), None));
    let stem = ObjectKey::stem(&hash, &"drums".parse::<Track>().unwrap());

    // Absent objects.
    assert!(!s.exists(&input).await.unwrap());
    assert!(matches!(s.get(&input).await, Err(Error::NotFound(_))));
    assert!(matches!(
        s.read(&input, None).await,
        Err(Error::NotFound(_))
    ));
    assert!(
        !s.delete(&input).await.unwrap(),
        "deleting nothing reports false"
    );

    // Put, then read back whole and in ranges.
    s.put(&input, Bytes::from(mp3.clone())).await.unwrap();
    assert!(s.exists(&input).await.unwrap());
    assert_eq!(s.get(&input).await.unwrap(), mp3);
    let whole = s.read(&input, None).await.unwrap();
    assert_eq!(whole.size, mp3.len() as u64);
    assert_eq!(collect(whole).await, mp3);
    let part = s.read(&input, Some((10, 110))).await.unwrap();
    assert_eq!(part.size, mp3.len() as u64, "size is the whole object's");
    assert_eq!(collect(part).await, &mp3[10..110]);
    let n = mp3.len() as u64;
    let tail = s.read(&input, Some((n - 5, n + 1000))).await.unwrap();
    assert_eq!(
        collect(tail).await,
        &mp3[mp3.len() - 5..],
        "end clamps to the size"
    );
    let past = s.read(&input, Some((n + 10, n + 20))).await.unwrap();
    assert!(
        collect(past).await.is_empty(),
        "a range past the end is empty"
    );

    // Other keys are independent.
    assert!(!s.exists(&stem).await.unwrap());

    // Overwrite replaces the whole object.
    let other = tone_mp3(550.0, 0.25, seed + 1);
    s.put(&input, Bytes::from(other.clone())).await.unwrap();
    assert_eq!(s.get(&input).await.unwrap(), other);
    assert_eq!(s.read(&input, None).await.unwrap().size, other.len() as u64);

    // Empty objects are objects.
    s.put(&stem, Bytes::new()).await.unwrap();
    assert!(s.exists(&stem).await.unwrap());
    assert!(s.get(&stem).await.unwrap().is_empty());
    let empty = s.read(&stem, None).await.unwrap();
    assert_eq!(empty.size, 0);
    assert!(collect(empty).await.is_empty());

    // Delete.
    assert!(s.delete(&input).await.unwrap());
    assert!(!s.exists(&input).await.unwrap());
    assert!(matches!(s.get(&input).await, Err(Error::NotFound(_))));
    assert!(!s.delete(&input).await.unwrap());
    assert!(s.delete(&stem).await.unwrap());
}

#[tokio::test]
async fn local_backend_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStorage::new(dir.path().join("store")).unwrap();
    contract(&s, 1).await;
    // Nothing but the object directories is left behind (no temp files from atomic writes).
    for sub in ["queue", "output"] {
        let left: Vec<_> = std::fs::read_dir(dir.path().join("store").join(sub))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{sub}: {left:?}");
    }
}

#[tokio::test]
async fn gcs_backend_meets_the_contract_on_fake_gcs_server() {
    let gcs = FakeGcs::start().expect("fake-gcs-server (run `make py-deps`)");
    gcs.bucket("stems").unwrap();
    let s = GcsStorage::new("stems", Some(&gcs.endpoint()))
        .await
        .unwrap();
    contract(&s, 2).await;
}

#[tokio::test]
async fn gcs_check_fails_for_a_missing_bucket() {
    let gcs = FakeGcs::start().expect("fake-gcs-server (run `make py-deps`)");
    let s = GcsStorage::new("no-such-bucket", Some(&gcs.endpoint()))
        .await
        .unwrap();
    assert!(s.check().await.is_err());
}

#[tokio::test]
async fn local_check_fails_when_the_directory_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let s = LocalStorage::new(&root).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    assert!(s.check().await.is_err());
}
