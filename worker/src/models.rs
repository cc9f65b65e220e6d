//! The models a worker has loaded: each `<model>.onnx` in the model directory is loaded at most
//! once per process, when the first job naming it arrives, and shared by every later job.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use stemsep_common::job::Track;
use stemsep_engine::Separator;
use tokio::sync::Mutex;

use crate::error::Error;

/// A loaded model and how its sources make the API's tracks.
pub struct Loaded {
    /// The engine, planned for this model.
    pub separator: Separator,
    /// For each of [`Track::ALL`], in that order, the model sources (indices in model order)
    /// whose sum is that track: a source named like a track is that track, any other source goes
    /// to `other`, and a model without an `other` source gives a silent one.
    pub tracks: Vec<(Track, Vec<usize>)>,
}

impl Loaded {
    /// Routes `separator`'s sources to tracks; a model without drums, bass or vocals cannot
    /// serve the API.
    fn new(name: &str, separator: Separator) -> Result<Loaded, Error> {
        let sources = &separator.info().sources;
        let track_of = |source: &String| source.parse().unwrap_or(Track::Other);
        let tracks: Vec<(Track, Vec<usize>)> = Track::ALL
            .iter()
            .map(|&track| {
                let mine = (0..sources.len())
                    .filter(|&s| track_of(&sources[s]) == track)
                    .collect();
                (track, mine)
            })
            .collect();
        for (track, mine) in &tracks {
            if mine.is_empty() && *track != Track::Other {
                return Err(Error::MissingSource {
                    model: name.into(),
                    track: *track,
                    sources: sources.join(","),
                });
            }
        }
        Ok(Loaded { separator, tracks })
    }
}

/// Lazily loaded models, by name.
pub struct Models {
    dir: PathBuf,
    loaded: Mutex<HashMap<String, Arc<Loaded>>>,
}

impl Models {
    /// Models found as `<dir>/<name>.onnx`.
    pub fn new(dir: PathBuf) -> Self {
        Models {
            dir,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// The model called `name`, loading it on first use.
    pub async fn get(&self, name: &str) -> Result<Arc<Loaded>, Error> {
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
        let separator = tokio::task::spawn_blocking(move || Separator::load(&path))
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
        let model = Arc::new(Loaded::new(name, separator)?);
        tracing::info!(
            model = name,
            secs = started.elapsed().as_secs_f64(),
            "model loaded"
        );
        loaded.insert(name.to_owned(), model.clone());
        Ok(model)
    }
}
