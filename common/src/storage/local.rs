//! Local-directory backend: objects are files under a root directory.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{ObjectKey, ObjectReader, Storage};
use crate::{Error, Result};

/// Objects as files under `root` (created if missing).
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// A backend rooted at `root`, creating the directory.
    pub fn new(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(&root)?;
        Ok(LocalStorage { root })
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        // ObjectKey is built from validated hashes and tracks only; this check keeps that
        // promise local to the file system code as well.
        debug_assert!(!key.as_str().contains(".."));
        self.root.join(key.as_str())
    }
}

#[async_trait::async_trait]
impl Storage for LocalStorage {
    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
        let path = self.path(key);
        let dir = path.parent().expect("object keys have a directory");
        tokio::fs::create_dir_all(dir).await?;
        // Write a temporary file beside the target, then rename it over the target: readers
        // never see a partial object, and a failed write leaves no stray file behind.
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let dir = path.parent().expect("object keys have a directory");
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            std::io::Write::write_all(&mut tmp, &data)?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        })
        .await
        .map_err(|e| Error::Storage(format!("writing {key}: {e}")))??;
        Ok(())
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        match tokio::fs::read(self.path(key)).await {
            Ok(v) => Ok(Bytes::from(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::NotFound(key.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn read(&self, key: &ObjectKey, range: Option<(u64, u64)>) -> Result<ObjectReader> {
        let mut file = match tokio::fs::File::open(self.path(key)).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(key.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        let size = file.metadata().await?.len();
        let (start, end) = range.unwrap_or((0, size));
        let (start, end) = (start.min(size), end.min(size));
        file.seek(std::io::SeekFrom::Start(start)).await?;
        let body = tokio_util::io::ReaderStream::new(file.take(end.saturating_sub(start)))
            .map(|r| r.map_err(Error::from));
        Ok(ObjectReader {
            size,
            body: Box::pin(body),
        })
    }

    async fn delete(&self, key: &ObjectKey) -> Result<bool> {
        match tokio::fs::remove_file(self.path(key)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn exists(&self, key: &ObjectKey) -> Result<bool> {
        Ok(tokio::fs::try_exists(self.path(key)).await?)
    }

    async fn check(&self) -> Result<()> {
        let probe = self.root.join(".healthz");
        tokio::fs::write(&probe, b"ok").await?;
        tokio::fs::remove_file(&probe).await?;
        Ok(())
    }
}
