//! A model's members run as one, the way `demucs.apply.apply_model` runs a `BagOfModels`: each
//! member separates the song with its own chunking, its output for source `s` is weighted by
//! `w[m][s]`, and the weighted sum is divided by `Σ_m w[m][s]`.
//!
//! Every bag of demucs' family chunks all its members at one segment, so here the members share
//! the chunking: each segment's mixture STFT is computed once and run through every member, and
//! the weighted combination enters one overlap-add. The overlap-add is linear and its weights are
//! the same for every member, so this is `apply_model`'s sum in another order (equal up to float
//! rounding). A member's sources with weight 0 are never transformed back (one-hot bags such as
//! `htdemucs_ft` run one iSTFT per member, not four).

use std::path::Path;

use stemsep_manifest::Manifest;
use tract_onnx::tract_core::prelude::multithread::Executor;

use crate::dsp::stft::{Stft, StftScratch};
use crate::model::{pool_of, Model, NodeTime};
use crate::separate::combine;
use crate::{EngineError, ModelInfo};

/// One core of the bag and what it contributes.
struct Member {
    model: Model,
    /// Weight of each source, in model order.
    weights: Vec<f32>,
    /// Whether the member contributes to each source (a non-zero weight).
    used: Vec<bool>,
}

/// The loaded members of a model, on one pool of threads.
pub struct Bag {
    members: Vec<Member>,
    /// Per source, the sum of the members' weights.
    totals: Vec<f32>,
    manifest: Manifest,
    info: ModelInfo,
    pool: Executor,
}

impl Bag {
    /// Loads the model at `path` (a model directory, a manifest, or a single `.onnx` core) and
    /// plans each member to run on a pool of `threads` threads.
    pub fn load(path: &Path, threads: usize) -> Result<Bag, EngineError> {
        let err = |path: &Path, reason: String| EngineError::Model {
            path: path.display().to_string(),
            reason,
        };
        let (manifest, mut cores) = if path.extension().is_some_and(|e| e == "onnx") {
            let core = Model::load(path)?;
            let manifest = Manifest::single(path.to_path_buf(), &core.info().facts)
                .map_err(|r| err(path, r))?;
            (manifest, vec![core])
        } else {
            let manifest = Manifest::load(path).map_err(|e| err(path, e.to_string()))?;
            let cores = manifest
                .members
                .iter()
                .map(|m| Model::load(&m.file))
                .collect::<Result<Vec<_>, _>>()?;
            (manifest, cores)
        };
        let first = cores[0].info().clone();
        let segment = manifest.members[0].segment_samples;
        for (core, member) in cores.iter().zip(&manifest.members) {
            let info = core.info();
            let file = &member.file;
            let differs = |what: &str| {
                err(
                    file,
                    format!("its {what} differs from the model's ({})", manifest.name),
                )
            };
            if info.sources() != manifest.sources {
                return Err(differs("sources"));
            }
            if info.facts.sample_rate != manifest.sample_rate
                || info.channels() != manifest.channels
            {
                return Err(differs("sample rate or channels"));
            }
            if (info.n_fft, info.hop_length, info.overlap)
                != (first.n_fft, first.hop_length, first.overlap)
            {
                return Err(differs("STFT or overlap"));
            }
            if member.segment_samples != segment {
                return Err(err(
                    file,
                    "members chunked at different segments are not supported (every bag of \
                     demucs' family has one)"
                        .into(),
                ));
            }
            if info.any_length != first.any_length {
                return Err(differs("kind of core (any length or its segment)"));
            }
            if member.segment_samples > info.segment_samples() {
                return Err(err(
                    file,
                    format!(
                        "chunked at {} samples, longer than the {} its core takes",
                        member.segment_samples,
                        info.segment_samples()
                    ),
                ));
            }
        }
        let members: Vec<Member> = cores
            .drain(..)
            .zip(&manifest.members)
            .map(|(model, m)| Member {
                model,
                weights: m.weights.iter().map(|&w| w as f32).collect(),
                used: m.weights.iter().map(|&w| w != 0.0).collect(),
            })
            .collect();
        let totals = (0..manifest.sources.len())
            .map(|s| members.iter().map(|m| m.weights[s]).sum())
            .collect();
        let info = ModelInfo {
            name: manifest.name.clone(),
            sources: manifest.sources.clone(),
            sample_rate: manifest.sample_rate,
            channels: manifest.channels,
            segment_samples: segment,
            n_fft: first.n_fft,
            hop_length: first.hop_length,
            overlap: first.overlap,
            members: members.len(),
            weights: manifest.weights,
        };
        Ok(Bag {
            members,
            totals,
            manifest,
            info,
            pool: pool_of(threads),
        })
    }

    /// The model's facts.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The model's manifest (member paths resolved).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The segment every member's core takes, in samples per channel (at least the chunking
    /// segment; a chunk is padded to it).
    pub fn core_samples(&self) -> usize {
        self.members[0].model.info().segment_samples()
    }

    /// The length the cores run a chunk of `chunk` samples at: the chunk's own for cores that
    /// take any length (apply_model runs an HDemucs so), else their segment, the chunk padded to
    /// it.
    pub fn core_length(&self, chunk: usize) -> usize {
        if self.members[0].model.info().any_length {
            chunk
        } else {
            self.core_samples()
        }
    }

    /// The pool a segment alone runs on.
    pub fn pool(&self) -> &Executor {
        &self.pool
    }

    /// The size of the pool.
    pub fn threads(&self) -> usize {
        match &self.pool {
            Executor::MultiThread(pool) => pool.current_num_threads(),
            _ => 1,
        }
    }

    /// Runs every member on one segment (`mix` planar `[C][T]` normalised, `spec` its STFT) on
    /// `executor` and combines them: samples `trim..trim + len` of each source, `[S][C][len]`
    /// flat, weighted and divided by the weight totals.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        executor: &Executor,
        stft: &Stft,
        mix: Vec<f32>,
        spec: Vec<f32>,
        scratch: &mut StftScratch,
        trim: usize,
        len: usize,
    ) -> Result<Vec<f32>, EngineError> {
        let channels = self.info.channels;
        let plane = channels * len;
        let mut out = vec![0.0f32; self.totals.len() * plane];
        let mut inputs = Some((mix, spec));
        for (k, member) in self.members.iter().enumerate() {
            let (mix, spec) = if k + 1 == self.members.len() {
                inputs.take()
            } else {
                inputs.clone()
            }
            .expect("inputs are taken by the last member only");
            let core = member.model.run_on(executor, mix, spec)?;
            let y = combine(stft, &core, channels, scratch, trim, len, &member.used)?;
            for (s, &w) in member.weights.iter().enumerate() {
                if member.used[s] {
                    let (o, y) = (&mut out[s * plane..][..plane], &y[s * plane..][..plane]);
                    o.iter_mut().zip(y).for_each(|(o, &y)| *o += w * y);
                }
            }
        }
        for (o, &total) in out.chunks_exact_mut(plane).zip(&self.totals) {
            o.iter_mut().for_each(|o| *o /= total);
        }
        Ok(out)
    }

    /// Runs one segment through every member's core on the bag's pool, timing every node (node
    /// names prefixed with the member's index when there are several).
    pub fn profile(&self, mix: &[f32], spec: &[f32]) -> Result<Vec<NodeTime>, EngineError> {
        let mut times = Vec::new();
        for (k, member) in self.members.iter().enumerate() {
            let mut nodes = member
                .model
                .profile(&self.pool, mix.to_vec(), spec.to_vec())?;
            if self.members.len() > 1 {
                nodes
                    .iter_mut()
                    .for_each(|n| n.node = format!("member {k}: {}", n.node));
            }
            times.append(&mut nodes);
        }
        Ok(times)
    }
}
