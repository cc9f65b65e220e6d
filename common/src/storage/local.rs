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
        // Write beside the target, then rename: readers never see a partial object.
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("object"),
            std::process::id() as u64 ^ rand_suffix()
        ));
        tokio::fs::write(&tmp, &data).await?;
        if let Err(e) = tokio::fs::rename(&tmp, &path).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e.into());
        }
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

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (N.fetch_add(1, Ordering::Relaxed) << 32) ^ t
}
