//! The models a worker serves: every model in its model directory (a directory with a
//! `manifest.json`, or a single `<name>.onnx` with its sidecar), announced to Redis at start-up so
//! that the REST server offers them, and each loaded at most once per process, when the first job
//! naming it arrives, then shared by every later job.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use stemsep_common::job::Track;
use stemsep_common::queue::Queue;
use stemsep_common::registry;
use stemsep_engine::Separator;
use stemsep_manifest::{valid_model_name, Manifest, ModelCard};
use tokio::sync::Mutex;

use crate::error::Error;

/// A loaded model and the stems it gives.
pub struct Loaded {
    /// The engine, planned for this model.
    pub separator: Separator,
    /// The model's stems as the API lists them ([`Track::of_sources`]), each with its source's
    /// index in the model's output.
    pub tracks: Vec<(Track, usize)>,
}

impl Loaded {
    fn new(separator: Separator) -> Result<Loaded, Error> {
        let sources = &separator.info().sources;
        let tracks = Track::of_sources(sources)?
            .into_iter()
            .map(|t| {
                let s = sources.iter().position(|s| s == t.name());
                (t, s.expect("a track named after a source"))
            })
            .collect();
        Ok(Loaded { separator, tracks })
    }
}

/// The models in the model directory, loaded lazily, by name.
pub struct Models {
    dir: PathBuf,
    loaded: Mutex<HashMap<String, Arc<Loaded>>>,
}

impl Models {
    /// Models found in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Models {
            dir,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// The cards of the models in the directory; models that cannot be read are logged and left
    /// out.
    pub fn cards(&self) -> Vec<ModelCard> {
        let found = match Manifest::discover(&self.dir) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the model directory");
                return Vec::new();
            }
        };
        found
            .into_iter()
            .filter_map(|m| {
                m.inspect_err(|e| tracing::warn!(error = %e, "model left out"))
                    .ok()
            })
            .map(|m| m.card())
            .collect()
    }

    /// Tells Redis which models this worker serves.
    pub async fn announce(&self, queue: &Queue) -> Result<usize, Error> {
        let cards = self.cards();
        registry::announce(queue, &cards).await?;
        for card in &cards {
            tracing::info!(model = %card.name, stems = %card.stems.join(","), members = card.members, weights = ?card.weights, "model served");
        }
        Ok(cards.len())
    }

    /// The model called `name`, loading it on first use.
    pub async fn get(&self, name: &str) -> Result<Arc<Loaded>, Error> {
        // The name comes from a job record, i.e. from a client: keep it a plain file stem.
        let missing = || Error::ModelMissing {
            name: name.into(),
            path: self.dir.display().to_string(),
        };
        if !valid_model_name(name) {
            return Err(missing());
        }
        let dir = self.dir.join(name);
        let path = if dir.is_dir() {
            dir
        } else {
            self.dir.join(format!("{name}.onnx"))
        };
        if !path.exists() {
            return Err(missing());
        }
        // Holding the lock while loading makes a second job for the same model wait for this
        // load instead of starting its own.
        let mut loaded = self.loaded.lock().await;
        if let Some(s) = loaded.get(name) {
            return Ok(s.clone());
        }
        let started = std::time::Instant::now();
        let separator = tokio::task::spawn_blocking(move || Separator::load(&path))
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
        let model = Arc::new(Loaded::new(separator)?);
        tracing::info!(
            model = name,
            secs = started.elapsed().as_secs_f64(),
            "model loaded"
        );
        loaded.insert(name.to_owned(), model.clone());
        Ok(model)
    }
}
