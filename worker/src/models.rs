//! The models a worker has loaded: each `<model>.onnx` in the model directory is loaded at most
//! once per process, when the first job naming it arrives, and shared by every later job.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::error::Error;
use crate::Separator;

/// Lazily loaded models, by name.
pub struct Models {
    dir: PathBuf,
    loaded: Mutex<HashMap<String, Arc<Separator>>>,
}

impl Models {
    /// Models found as `<dir>/<name>.onnx`.
    pub fn new(dir: PathBuf) -> Self {
        Models {
            dir,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// The separator for `name`, loading it on first use.
    pub async fn get(&self, name: &str) -> Result<Arc<Separator>, Error> {
        // The name comes from a job record, i.e. from a client: keep it a plain file stem.
        let plain = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let path = self.dir.join(format!("{name}.onnx"));
        if !plain || !path.is_file() {
            return Err(Error::ModelMissing {
                name: name.into(),
                path: path.display().to_string(),
            });
        }
        // Holding the lock while loading makes a second job for the same model wait for this
        // load instead of starting its own.
        let mut loaded = self.loaded.lock().await;
        if let Some(s) = loaded.get(name) {
            return Ok(s.clone());
        }
        let started = std::time::Instant::now();
        let sep = tokio::task::spawn_blocking(move || Separator::load(&path))
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
        tracing::info!(
            model = name,
            secs = started.elapsed().as_secs_f64(),
            "model loaded"
        );
        let sep = Arc::new(sep);
        loaded.insert(name.to_owned(), sep.clone());
        Ok(sep)
    }
}
