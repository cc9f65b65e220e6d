//! The learned core: an ONNX file loaded into tract once, optimised, planned, and run once per
//! segment from any thread.
//!
//! The model describes itself (`model/README.md` §1): `stemsep.*` keys in the ONNX
//! `metadata_props`, or the same keys in a sidecar `<file>.onnx.json`. Nothing about the model is
//! hard-coded here.

use std::collections::HashMap;
use std::path::Path;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::prelude::multithread::{multithread_tract_scope, Executor};

use crate::{EngineError, ModelInfo};

/// The split-model contract version this engine implements.
const FORMAT: &str = "1";

/// A loaded, optimised, runnable core.
pub struct Model {
    plan: Arc<TypedRunnableModel>,
    /// The pool [`Model::run`] shares a segment's work out on.
    pool: Executor,
    info: ModelInfo,
    /// Positions of the `mix` and `spec` inputs in the plan's input list.
    mix_input: usize,
    spec_input: usize,
    /// Positions of the `freq` and `time` outputs in the plan's output list.
    freq_output: usize,
    time_output: usize,
}

/// The two outputs of the core for one segment.
pub struct CoreOutput {
    /// Frequency branch, `[1, S, 2C, bins, frames]`, complex-as-channels.
    pub freq: TValue,
    /// Time branch, `[1, S, C, T]`.
    pub time: TValue,
}

/// A pool of `threads` threads to run segments on; no pool for one (or none).
pub fn pool_of(threads: usize) -> Executor {
    match threads {
        0 | 1 => Executor::SingleThread,
        n => Executor::multithread(n),
    }
}

impl Model {
    /// Loads the ONNX file at `path` and plans it to run on a pool of `threads` threads (the
    /// matrix products and convolutions; 1 = single-threaded).
    pub fn load(path: &Path, threads: usize) -> Result<Model, EngineError> {
        let err = |reason: String| EngineError::Model {
            path: path.display().to_string(),
            reason,
        };
        let mut model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(|e| err(format!("cannot load ONNX: {e:#}")))?;
        let info = read_info(path, &model.properties).map_err(err)?;
        let (c, t) = (info.channels, info.segment_samples);
        let (bins, frames) = (info.n_fft / 2, t.div_ceil(info.hop_length));

        let input_names: Vec<String> = model
            .input_outlets()
            .map_err(|e| err(format!("{e:#}")))?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        let find = |name: &str| {
            input_names
                .iter()
                .position(|n| n == name)
                .ok_or_else(|| err(format!("no input named {name:?} (inputs: {input_names:?})")))
        };
        let (mix_input, spec_input) = (find("mix")?, find("spec")?);
        model
            .set_input_fact(mix_input, f32::fact([1, c, t]).into())
            .and_then(|_| {
                model.set_input_fact(spec_input, f32::fact([1, 2 * c, bins, frames]).into())
            })
            .map_err(|e| err(format!("{e:#}")))?;
        let mut typed = model
            .into_typed()
            .and_then(|m| m.into_decluttered())
            .map_err(|e| err(format!("cannot declutter: {e:#}")))?;
        let on_gemm = crate::kernels::matmul::use_gemm(&mut typed)
            .map_err(|e| err(format!("cannot hand products to gemm: {e:#}")))?;
        let convs_on_gemm = crate::kernels::conv::use_conv_gemm(&mut typed)
            .map_err(|e| err(format!("cannot hand convolutions to gemm: {e:#}")))?;
        let deconvs_on_gemm = crate::kernels::deconv::use_deconv_gemm(&mut typed).map_err(|e| {
            err(format!(
                "cannot hand transposed convolutions to gemm: {e:#}"
            ))
        })?;
        tracing::debug!(
            model = %path.display(),
            on_gemm,
            convs_on_gemm,
            deconvs_on_gemm,
            "products and convolutions run by gemm"
        );
        let typed = typed
            .into_optimized()
            .map_err(|e| err(format!("cannot optimise: {e:#}")))?;

        // The outputs are told apart by rank: freq is [1,S,2C,F,T], time is [1,S,C,T].
        let ranks: Vec<usize> = typed
            .output_outlets()
            .map_err(|e| err(format!("{e:#}")))?
            .iter()
            .map(|&o| typed.outlet_fact(o).map(|f| f.rank()))
            .collect::<TractResult<_>>()
            .map_err(|e| err(format!("{e:#}")))?;
        let out = |rank: usize| {
            ranks
                .iter()
                .position(|&r| r == rank)
                .ok_or_else(|| err(format!("no output of rank {rank} (ranks {ranks:?})")))
        };
        let (freq_output, time_output) = (out(5)?, out(4)?);

        // The pool is chosen per run, not bound into the plan: see `run_on`.
        let plan = typed
            .into_runnable()
            .map_err(|e| err(format!("cannot plan: {e:#}")))?;
        Ok(Model {
            plan,
            pool: pool_of(threads),
            info,
            mix_input,
            spec_input,
            freq_output,
            time_output,
        })
    }

    /// The model's facts.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Runs the core on one segment, on the model's pool: `mix` planar `[C][T]`, `spec`
    /// `[2C][bins][frames]`.
    pub fn run(&self, mix: Vec<f32>, spec: Vec<f32>) -> Result<CoreOutput, EngineError> {
        self.run_on(&self.pool, mix, spec)
    }

    /// Runs the core on one segment like [`Model::run`], on `executor` instead of the model's
    /// pool: segments side by side each on their own share of the cores.
    pub fn run_on(
        &self,
        executor: &Executor,
        mix: Vec<f32>,
        spec: Vec<f32>,
    ) -> Result<CoreOutput, EngineError> {
        let inputs = self.inputs(mix, spec)?;
        let outputs = multithread_tract_scope(executor.clone(), || self.plan.run(inputs))
            .map_err(inference)?;
        self.outputs(outputs)
    }

    /// The pool [`Model::run`] uses.
    pub fn pool(&self) -> &Executor {
        &self.pool
    }

    /// The size of the model's pool.
    pub fn threads(&self) -> usize {
        match &self.pool {
            Executor::MultiThread(pool) => pool.current_num_threads(),
            _ => 1,
        }
    }

    /// Runs one segment like [`Model::run`], timing every node of the optimised plan. For
    /// `make bench-profile`; the timing wrapper adds a few µs per node.
    pub fn profile(&self, mix: Vec<f32>, spec: Vec<f32>) -> Result<Vec<NodeTime>, EngineError> {
        let mut times = Vec::new();
        let mut state = TypedSimpleState::new(&self.plan).map_err(inference)?;
        let inputs = self.inputs(mix, spec)?;
        let outputs = multithread_tract_scope(self.pool.clone(), || {
            state.run_plan_with_eval(inputs, |ctx, op_state, node, inputs| {
                let started = std::time::Instant::now();
                let result = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                times.push(NodeTime {
                    node: node.name.clone(),
                    op: node.op().name().to_string(),
                    info: node.op().info().unwrap_or_default().join("; "),
                    time: started.elapsed(),
                });
                result
            })
        })
        .map_err(inference)?;
        self.outputs(outputs)?;
        Ok(times)
    }

    /// `(channels, segment samples, bins, frames)`: the shapes of one segment's tensors.
    fn geometry(&self) -> (usize, usize, usize, usize) {
        let (c, t) = (self.info.channels, self.info.segment_samples);
        (c, t, self.info.n_fft / 2, t.div_ceil(self.info.hop_length))
    }

    fn inputs(&self, mix: Vec<f32>, spec: Vec<f32>) -> Result<TVec<TValue>, EngineError> {
        let (c, t, bins, frames) = self.geometry();
        let mix = tract_ndarray::Array3::from_shape_vec((1, c, t), mix)
            .map_err(|e| EngineError::Inference(e.to_string()))?
            .into_tensor();
        let spec = tract_ndarray::Array4::from_shape_vec((1, 2 * c, bins, frames), spec)
            .map_err(|e| EngineError::Inference(e.to_string()))?
            .into_tensor();
        Ok(if self.mix_input < self.spec_input {
            tvec![mix.into_tvalue(), spec.into_tvalue()]
        } else {
            tvec![spec.into_tvalue(), mix.into_tvalue()]
        })
    }

    fn outputs(&self, outputs: TVec<TValue>) -> Result<CoreOutput, EngineError> {
        let (c, t, bins, frames) = self.geometry();
        let s = self.info.sources.len();
        let take = |outputs: &TVec<TValue>, i: usize, shape: &[usize]| {
            let v = outputs[i].clone();
            if v.shape() != shape {
                return Err(EngineError::Inference(format!(
                    "output {i} has shape {:?}, expected {shape:?}",
                    v.shape()
                )));
            }
            Ok(v)
        };
        let freq = take(&outputs, self.freq_output, &[1, s, 2 * c, bins, frames])?;
        let time = take(&outputs, self.time_output, &[1, s, c, t])?;
        Ok(CoreOutput { freq, time })
    }
}

/// One node's share of a profiled segment.
pub struct NodeTime {
    /// The node's name in the optimised plan (derived from the ONNX node names).
    pub node: String,
    /// The tract operator kind, e.g. `OptMatMul`.
    pub op: String,
    /// What tract says about the node: shapes, the kernel picked.
    pub info: String,
    /// Wall time of the node's evaluation.
    pub time: std::time::Duration,
}

/// A failure inside tract while running the plan.
fn inference(e: TractError) -> EngineError {
    EngineError::Inference(format!("{e:#}"))
}

/// Reads the `stemsep.*` facts from the ONNX properties, or else from `<path>.json`.
fn read_info(path: &Path, props: &HashMap<String, Arc<Tensor>>) -> Result<ModelInfo, String> {
    const PREFIX: &str = "onnx.metadata_props.";
    let mut meta: HashMap<String, String> = props
        .iter()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix(PREFIX)?;
            let value = v
                .try_as_plain_ram()
                .ok()?
                .to_scalar::<String>()
                .ok()?
                .clone();
            Some((key.to_string(), value))
        })
        .collect();
    if !meta.contains_key("stemsep.format") {
        let mut sidecar = path.as_os_str().to_owned();
        sidecar.push(".json");
        let text = std::fs::read_to_string(&sidecar).map_err(|e| {
            format!(
                "no stemsep.* metadata in the ONNX file and no sidecar {}: {e}",
                Path::new(&sidecar).display()
            )
        })?;
        let json: HashMap<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| format!("sidecar JSON: {e}"))?;
        meta = json
            .into_iter()
            .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string)))
            .collect();
    }
    let get = |key: &str| {
        meta.get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("metadata key {key:?} missing"))
    };
    let num = |key: &str| -> Result<usize, String> {
        get(key)?
            .trim()
            .parse()
            .map_err(|e| format!("metadata {key:?}: {e}"))
    };
    let format = get("stemsep.format")?;
    if format != FORMAT {
        return Err(format!(
            "model format {format:?}, this engine reads format {FORMAT:?}"
        ));
    }
    let spec_layout = get("stemsep.spec_layout").unwrap_or("cac");
    if spec_layout != "cac" {
        return Err(format!(
            "spectrogram layout {spec_layout:?} unsupported (need cac)"
        ));
    }
    let info = ModelInfo {
        name: get("stemsep.name")?.to_string(),
        sources: get("stemsep.sources")?
            .split(',')
            .map(|s| s.trim().to_string())
            .collect(),
        sample_rate: num("stemsep.sample_rate")? as u32,
        channels: num("stemsep.channels")?,
        segment_samples: num("stemsep.segment_samples")?,
        n_fft: num("stemsep.nfft")?,
        hop_length: num("stemsep.hop")?,
        overlap: get("stemsep.overlap")
            .unwrap_or("0.25")
            .parse()
            .map_err(|e| format!("metadata \"stemsep.overlap\": {e}"))?,
    };
    if info.channels != 2 {
        return Err(format!(
            "{} audio channels; only stereo models are supported",
            info.channels
        ));
    }
    if info.sample_rate == 0 || info.segment_samples == 0 || info.sources.is_empty() {
        return Err("sample_rate, segment_samples and sources must be non-empty".into());
    }
    if !(0.0..1.0).contains(&info.overlap) {
        return Err(format!("overlap {} outside 0..1", info.overlap));
    }
    Ok(info)
}
