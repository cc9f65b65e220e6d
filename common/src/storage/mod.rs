//! Object storage: one small trait, a local-directory backend (default) and a GCS backend.
//!
//! Object names are built only from a [`SongHash`], a [`Track`], a [`Rendition`] and an upload
//! id ([`ObjectKey`]), all checked hex or fixed names, so no name that reaches a backend can
//! carry a path trick.

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

use crate::job::{Job, SongHash, Track};
use crate::output::Rendition;
use crate::Result;

mod gcs;
mod local;

pub use gcs::GcsStorage;
pub use local::LocalStorage;

/// The name of a stored object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// The uploaded song of one submission of `job`: `queue/<hash>-<upload>.mp3`
    /// (`queue/<hash>.mp3` for records older than upload ids). Each submission has its own, so
    /// deleting a finished job's input never removes the input of a resubmission.
    pub fn input(job: &Job) -> Self {
        match &job.upload {
            Some(u) => ObjectKey(format!("queue/{}-{u}.mp3", job.hash)),
            None => ObjectKey(format!("queue/{}.mp3", job.hash)),
        }
    }
    /// One of a job's tracks as the worker leaves it, MP3 at the job's bitrate:
    /// `output/<hash>-<track>.mp3` (the lab's name).
    pub fn stem(hash: &SongHash, track: &Track) -> Self {
        ObjectKey(format!("output/{hash}-{track}.mp3"))
    }
    /// The lossless master of one of the model's stems: `output/<hash>-<stem>.master.flac`.
    pub fn master(hash: &SongHash, stem: &Track) -> Self {
        ObjectKey(format!("output/{hash}-{stem}.master.flac"))
    }
    /// A file made from the masters: `output/<hash>-<slug>` ([`Rendition::slug`]).
    pub fn rendition(hash: &SongHash, rendition: &Rendition) -> Self {
        ObjectKey(format!("output/{hash}-{}", rendition.slug()))
    }
    /// The object name, `/`-separated.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stream of an object's bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// An object opened for reading.
pub struct ObjectReader {
    /// Size of the whole object in bytes.
    pub size: u64,
    /// The requested bytes (the whole object, or the requested range).
    pub body: ByteStream,
}

/// What both backends do. Writes are atomic: a reader sees the old object, the new one, or none,
/// never a partial one (a job may run twice; its outputs simply overwrite).
#[async_trait::async_trait]
pub trait Storage: Send + Sync {
    /// Stores `data` under `key`, replacing any previous object.
    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()>;
    /// The whole object; [`crate::Error::NotFound`] if absent.
    async fn get(&self, key: &ObjectKey) -> Result<Bytes>;
    /// Streams the object, or bytes `start..end` (end exclusive, clamped to the size) of it.
    async fn read(&self, key: &ObjectKey, range: Option<(u64, u64)>) -> Result<ObjectReader>;
    /// Removes the object; `false` if there was none.
    async fn delete(&self, key: &ObjectKey) -> Result<bool>;
    /// Whether the object exists.
    async fn exists(&self, key: &ObjectKey) -> Result<bool>;
    /// Readiness: the backend answers (directory writable, bucket reachable).
    async fn check(&self) -> Result<()>;
}
