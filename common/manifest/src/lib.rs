//! A model as stemsep serves it, written once for the engine, the worker and the REST server.
//!
//! A model is a [`Manifest`]: its ordered sources (the stems a job gets), its sample rate, and its
//! members — ONNX cores exported by `model/export.py`, each with the segment `apply_model` cuts
//! the song into for it and its per-source weight in the bag. demucs' own bags are described the
//! same way (`demucs/remote/*.yaml`): `htdemucs` is one member, `htdemucs_ft` four with one-hot
//! weights (member k gives source k). The estimate of source `s` is `Σ_m w[m][s]·y_m[s] / Σ_m
//! w[m][s]`, as `demucs.apply.apply_model` computes it for a bag.
//!
//! On disk a model is one artefact a user copies as a unit: a directory holding `manifest.json`
//! and its members' `.onnx` files (with their `.onnx.json` sidecars), or, for a one-member model,
//! a single `<name>.onnx` with its sidecar.
#![warn(missing_docs)]

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file naming a model directory's contents.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The manifest format this crate reads and writes.
pub const FORMAT: u32 = 1;

/// Longest model or stem name, in bytes.
const MAX_NAME: usize = 64;

/// Why a manifest cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a manifest (or sidecar) this crate reads.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where a model's weights come from: what a user of its stems should expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weights {
    /// demucs' published weights (`demucs.pretrained.get_model`): separates real music.
    Pretrained,
    /// The demo model this project trained on synthetic renders (`model/train.py`).
    Demo,
    /// Random weights of the real architecture, for tests and benchmarks: its stems are noise.
    Random,
}

/// One ONNX core of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The core's ONNX file: a plain file name beside the manifest (resolved by [`Manifest::load`]
    /// to a full path).
    pub file: PathBuf,
    /// Segment `apply_model` cuts the song into for this member, in samples per channel.
    pub segment_samples: usize,
    /// This member's weight for each source, in [`Manifest::sources`] order.
    pub weights: Vec<f64>,
}

/// A model: its stems, its rate, its members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format, [`FORMAT`].
    pub format: u32,
    /// The name jobs ask for, e.g. `htdemucs_ft`.
    pub name: String,
    /// Where the weights come from (`demucs-4.1.0:htdemucs_ft`, `random-init-seed-42`, …).
    pub version: String,
    /// What kind of weights these are.
    pub weights: Weights,
    /// Source names in the order of every member's output axis: the model's stems.
    pub sources: Vec<String>,
    /// Sample rate the model works at, in Hz.
    pub sample_rate: u32,
    /// Audio channels the model takes.
    pub channels: usize,
    /// The bag: at least one member.
    pub members: Vec<Member>,
}

/// What a client is told about a served model (`GET /apiv1/models`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// The name jobs ask for.
    pub name: String,
    /// Its stems, in the model's order.
    pub stems: Vec<String>,
    /// The longest segment its members are run on, in seconds.
    pub segment_seconds: f64,
    /// Members in the bag.
    pub members: usize,
    /// What kind of weights these are.
    pub weights: Weights,
    /// Sample rate of the stems, in Hz.
    pub sample_rate: u32,
}

impl Manifest {
    /// Reads the model at `path`: a model directory (holding [`MANIFEST_FILE`]), a manifest file,
    /// or a single `.onnx` core with its `.onnx.json` sidecar. Member paths come back resolved. The
    /// model is named as it is found on disk (the directory, or the file without `.onnx`), the name
    /// a job asks for; a manifest's own `name` is what it was exported as.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        if path.is_dir() {
            return Manifest::load(&path.join(MANIFEST_FILE));
        }
        if path.extension().is_some_and(|e| e == "onnx") {
            let sidecar = sidecar_of(path);
            let text = read(&sidecar)?;
            let facts = sidecar_facts(&text).map_err(|reason| invalid(&sidecar, reason))?;
            return Manifest::single(path.to_path_buf(), &facts).map_err(|r| invalid(path, r));
        }
        let mut manifest = Manifest::load_file(path)?;
        if let Some(name) = disk_name(path.parent().and_then(Path::file_name)) {
            manifest.name = name;
        }
        Ok(manifest)
    }

    /// Reads a manifest file, resolving its members beside it.
    fn load_file(path: &Path) -> Result<Manifest, ManifestError> {
        let text = read(path)?;
        let mut manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| invalid(path, e.to_string()))?;
        manifest.validate().map_err(|r| invalid(path, r))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for member in &mut manifest.members {
            let plain = member.file.components().count() == 1
                && member.file.extension().is_some_and(|e| e == "onnx");
            if !plain {
                return Err(invalid(
                    path,
                    format!(
                        "member {:?} must be a plain .onnx file name beside the manifest",
                        member.file
                    ),
                ));
            }
            member.file = dir.join(&member.file);
        }
        Ok(manifest)
    }

    /// A one-member model from the facts of its core (its `stemsep.*` metadata, as
    /// `model/export.py` writes them into the ONNX file and its sidecar), named as the file is.
    pub fn single(file: PathBuf, facts: &CoreFacts) -> Result<Manifest, String> {
        let name = disk_name(file.file_stem()).unwrap_or_else(|| facts.name.clone());
        let manifest = Manifest {
            format: FORMAT,
            name,
            version: facts.version.clone(),
            weights: facts.weights,
            sources: facts.sources.clone(),
            sample_rate: facts.sample_rate,
            channels: facts.channels,
            members: vec![Member {
                file,
                segment_samples: facts.segment_samples,
                weights: vec![1.0; facts.sources.len()],
            }],
        };
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks what the engine and the API rely on: plain names, distinct stems, one weight per
    /// source and member, and no source whose weights sum to zero.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "manifest format {}, this build reads format {FORMAT}",
                self.format
            ));
        }
        if !valid_model_name(&self.name) {
            return Err(format!(
                "model name {:?}: use letters, digits, '_' and '-' (at most {MAX_NAME})",
                self.name
            ));
        }
        if self.sources.is_empty() {
            return Err("no sources".into());
        }
        for (i, source) in self.sources.iter().enumerate() {
            if !valid_stem_name(source) {
                return Err(format!(
                    "source {source:?}: use lowercase letters, digits and '_'"
                ));
            }
            if self.sources[..i].contains(source) {
                return Err(format!("source {source:?} appears twice"));
            }
        }
        if self.sample_rate == 0 || self.channels == 0 {
            return Err("sample_rate and channels must be positive".into());
        }
        if self.members.is_empty() {
            return Err("no members".into());
        }
        for (m, member) in self.members.iter().enumerate() {
            if member.weights.len() != self.sources.len() {
                return Err(format!(
                    "member {m} has {} weights for {} sources",
                    member.weights.len(),
                    self.sources.len()
                ));
            }
            if member.weights.iter().any(|w| !w.is_finite()) {
                return Err(format!("member {m} has a weight that is not a number"));
            }
            if member.segment_samples == 0 {
                return Err(format!("member {m} has an empty segment"));
            }
        }
        for (s, source) in self.sources.iter().enumerate() {
            let total: f64 = self.members.iter().map(|m| m.weights[s]).sum();
            if total == 0.0 {
                return Err(format!("the weights of source {source:?} sum to zero"));
            }
        }
        Ok(())
    }

    /// What a client is told about this model.
    pub fn card(&self) -> ModelCard {
        let longest = self.members.iter().map(|m| m.segment_samples).max();
        ModelCard {
            name: self.name.clone(),
            stems: self.sources.clone(),
            segment_seconds: longest.unwrap_or(0) as f64 / self.sample_rate as f64,
            members: self.members.len(),
            weights: self.weights,
            sample_rate: self.sample_rate,
        }
    }

    /// The models in `dir`, by name, sorted: each subdirectory holding a [`MANIFEST_FILE`] and
    /// each `.onnx` file with a sidecar. A model that cannot be read is reported, not skipped
    /// silently; a name found twice keeps its first (directory) form.
    pub fn discover(dir: &Path) -> Result<Vec<Result<Manifest, ManifestError>>, ManifestError> {
        let entries = std::fs::read_dir(dir).map_err(|source| ManifestError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.join(MANIFEST_FILE).is_file()
                    || (p.extension().is_some_and(|e| e == "onnx") && sidecar_of(p).is_file())
            })
            .collect();
        // Directories first, then single files, each sorted: a name's directory form wins.
        paths.sort_by_key(|p| (!p.is_dir(), p.clone()));
        let mut seen = Vec::new();
        let mut found = Vec::new();
        for path in paths {
            let loaded = Manifest::load(&path);
            if let Ok(m) = &loaded {
                if seen.contains(&m.name) {
                    continue;
                }
                seen.push(m.name.clone());
            }
            found.push(loaded);
        }
        found.sort_by(|a, b| match (a, b) {
            (Ok(a), Ok(b)) => a.name.cmp(&b.name),
            (Ok(_), Err(_)) => std::cmp::Ordering::Less,
            (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
            (Err(_), Err(_)) => std::cmp::Ordering::Equal,
        });
        Ok(found)
    }
}

/// The facts one exported core states about itself (`stemsep.*` metadata).
#[derive(Debug, Clone, PartialEq)]
pub struct CoreFacts {
    /// `stemsep.name`.
    pub name: String,
    /// `stemsep.version`.
    pub version: String,
    /// `stemsep.weights`, or inferred from the version of exports made before that key existed.
    pub weights: Weights,
    /// `stemsep.sources`.
    pub sources: Vec<String>,
    /// `stemsep.sample_rate`, Hz.
    pub sample_rate: u32,
    /// `stemsep.channels`.
    pub channels: usize,
    /// `stemsep.segment_samples`: the segment the core takes, samples per channel.
    pub segment_samples: usize,
}

impl CoreFacts {
    /// Reads the facts from `stemsep.*` key/value pairs (ONNX `metadata_props` or a sidecar).
    pub fn from_pairs<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<CoreFacts, String> {
        let need = |key: &str| get(key).ok_or_else(|| format!("metadata key {key:?} missing"));
        let num = |key: &str| -> Result<usize, String> {
            need(key)?
                .trim()
                .parse()
                .map_err(|e| format!("metadata {key:?}: {e}"))
        };
        let version = get("stemsep.version").unwrap_or_default().to_string();
        let weights = match get("stemsep.weights") {
            Some("pretrained") => Weights::Pretrained,
            Some("demo") => Weights::Demo,
            Some("random") => Weights::Random,
            Some(other) => return Err(format!("metadata \"stemsep.weights\": {other:?}")),
            // Exports from before the key: their version says what they are.
            None if version.contains("random-init") || version.contains("tiny") => Weights::Random,
            None if version.contains("stemsep-train") => Weights::Demo,
            None => Weights::Pretrained,
        };
        Ok(CoreFacts {
            name: need("stemsep.name")?.to_string(),
            version,
            weights,
            sources: need("stemsep.sources")?
                .split(',')
                .map(|s| s.trim().to_string())
                .collect(),
            sample_rate: u32::try_from(num("stemsep.sample_rate")?)
                .map_err(|e| format!("metadata \"stemsep.sample_rate\": {e}"))?,
            channels: num("stemsep.channels")?,
            segment_samples: num("stemsep.segment_samples")?,
        })
    }
}

/// A model name a job may carry: letters, digits, `_` and `-`, at most 64 bytes (it names files
/// and Redis fields).
pub fn valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A stem name: lowercase letters, digits and `_`, at most 64 bytes (it names objects and URL
/// path segments).
pub fn valid_stem_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A model name taken from a file or directory name, if it is one.
fn disk_name(name: Option<&std::ffi::OsStr>) -> Option<String> {
    name.and_then(|n| n.to_str())
        .filter(|n| valid_model_name(n))
        .map(str::to_owned)
}

fn sidecar_of(onnx: &Path) -> PathBuf {
    let mut sidecar = onnx.as_os_str().to_owned();
    sidecar.push(".json");
    PathBuf::from(sidecar)
}

fn sidecar_facts(text: &str) -> Result<CoreFacts, String> {
    let json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| format!("sidecar JSON: {e}"))?;
    CoreFacts::from_pairs(|key| json.get(key).and_then(serde_json::Value::as_str))
}

fn read(path: &Path) -> Result<String, ManifestError> {
    std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn invalid(path: &Path, reason: String) -> ManifestError {
    ManifestError::Invalid {
        path: path.display().to_string(),
        reason,
    }
}
