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

use stemsep_manifest::CoreFacts;

use crate::EngineError;

/// The split-model contract version this engine implements.
const FORMAT: &str = "1";

/// What one core states about itself: the facts a manifest shares, plus the geometry the host
/// DSP around it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreInfo {
    /// `stemsep.name`, `stemsep.sources`, the rate, channels and segment.
    pub facts: CoreFacts,
    /// STFT size, in samples.
    pub n_fft: usize,
    /// STFT hop, in samples.
    pub hop_length: usize,
    /// Fraction of a segment consecutive segments share.
    pub overlap: f64,
    /// Whether the core takes any length up to its segment (`stemsep.length` `any`: an HDemucs,
    /// which apply_model runs at each chunk's own length), or exactly its segment.
    pub any_length: bool,
}

impl CoreInfo {
    /// Source names in the order of the core's output axis.
    pub fn sources(&self) -> &[String] {
        &self.facts.sources
    }

    /// Audio channels.
    pub fn channels(&self) -> usize {
        self.facts.channels
    }

    /// The segment the core takes, in samples per channel.
    pub fn segment_samples(&self) -> usize {
        self.facts.segment_samples
    }
}

/// A loaded core: planned at its segment length, and, for a core that takes any length (HDemucs),
/// able to plan itself at another.
pub struct Model {
    /// The plan at the core's segment length.
    plan: Plan,
    /// The parsed ONNX graph, kept to plan other lengths (cores that take any length only).
    source: Option<InferenceModel>,
    path: String,
    info: CoreInfo,
}

/// An optimised, runnable graph at one segment length.
struct Plan {
    runnable: Arc<TypedRunnableModel>,
    /// Samples per channel the plan takes.
    length: usize,
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
    /// Loads the ONNX file at `path`, optimises it with our kernels in place of tract's, and plans
    /// it at its segment length; the pool it runs on is chosen per run.
    pub fn load(path: &Path) -> Result<Model, EngineError> {
        let err = |reason: String| EngineError::Model {
            path: path.display().to_string(),
            reason,
        };
        let source = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(|e| err(format!("cannot load ONNX: {e:#}")))?;
        let info = read_info(path, &source.properties).map_err(err)?;
        let path = path.display().to_string();
        let keep = info.any_length.then(|| source.clone());
        let plan = Plan::new(source, &info, info.segment_samples(), &path)?;
        Ok(Model {
            plan,
            source: keep,
            path,
            info,
        })
    }

    /// The core's facts.
    pub fn info(&self) -> &CoreInfo {
        &self.info
    }

    /// Runs the core on one segment on `executor`: `mix` planar `[C][T]`, `spec`
    /// `[2C][bins][frames]`, `T` the core's segment, or, for a core that takes any length, any
    /// `T` up to it (planned for that length first: the short last chunk of a song).
    pub fn run_on(
        &self,
        executor: &Executor,
        mix: Vec<f32>,
        spec: Vec<f32>,
    ) -> Result<CoreOutput, EngineError> {
        let length = mix.len() / self.info.channels();
        let other;
        let plan = if length == self.plan.length {
            &self.plan
        } else {
            let Some(source) = &self.source else {
                return Err(EngineError::Inference(format!(
                    "a segment of {length} samples for a core that takes {}",
                    self.plan.length
                )));
            };
            let started = std::time::Instant::now();
            other = Plan::new(source.clone(), &self.info, length, &self.path)?;
            tracing::debug!(
                length,
                secs = started.elapsed().as_secs_f64(),
                "core planned for a short segment"
            );
            &other
        };
        let inputs = plan.inputs(&self.info, mix, spec)?;
        let outputs = multithread_tract_scope(executor.clone(), || plan.runnable.run(inputs))
            .map_err(inference)?;
        plan.outputs(&self.info, outputs)
    }

    /// Runs one segment (at the core's segment length) like [`Model::run_on`], timing every node
    /// of the optimised plan. For `make bench-profile`; the timing wrapper adds a few µs per node.
    pub fn profile(
        &self,
        executor: &Executor,
        mix: Vec<f32>,
        spec: Vec<f32>,
    ) -> Result<Vec<NodeTime>, EngineError> {
        let plan = &self.plan;
        let mut times = Vec::new();
        let mut state = TypedSimpleState::new(&plan.runnable).map_err(inference)?;
        let inputs = plan.inputs(&self.info, mix, spec)?;
        let outputs = multithread_tract_scope(executor.clone(), || {
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
        plan.outputs(&self.info, outputs)?;
        Ok(times)
    }
}

impl Plan {
    /// Types, declutters and optimises `model` for segments of `length` samples, with our kernels
    /// in place of tract's large products and convolutions, and plans it.
    fn new(
        mut model: InferenceModel,
        info: &CoreInfo,
        length: usize,
        path: &str,
    ) -> Result<Plan, EngineError> {
        let err = |reason: String| EngineError::Model {
            path: path.to_owned(),
            reason,
        };
        let c = info.channels();
        let (bins, frames) = (info.n_fft / 2, length.div_ceil(info.hop_length));
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
            .set_input_fact(mix_input, f32::fact([1, c, length]).into())
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
            model = %path,
            length,
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

        // The pool is chosen per run, not bound into the plan: see `Model::run_on`.
        let runnable = typed
            .into_runnable()
            .map_err(|e| err(format!("cannot plan: {e:#}")))?;
        Ok(Plan {
            runnable,
            length,
            mix_input,
            spec_input,
            freq_output,
            time_output,
        })
    }

    /// `(channels, samples, bins, frames)`: the shapes of one segment's tensors.
    fn geometry(&self, info: &CoreInfo) -> (usize, usize, usize, usize) {
        let (c, t) = (info.channels(), self.length);
        (c, t, info.n_fft / 2, t.div_ceil(info.hop_length))
    }

    fn inputs(
        &self,
        info: &CoreInfo,
        mix: Vec<f32>,
        spec: Vec<f32>,
    ) -> Result<TVec<TValue>, EngineError> {
        let (c, t, bins, frames) = self.geometry(info);
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

    fn outputs(&self, info: &CoreInfo, outputs: TVec<TValue>) -> Result<CoreOutput, EngineError> {
        let (c, t, bins, frames) = self.geometry(info);
        let s = info.sources().len();
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
fn read_info(path: &Path, props: &HashMap<String, Arc<Tensor>>) -> Result<CoreInfo, String> {
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
    let info = CoreInfo {
        facts: CoreFacts::from_pairs(|key| meta.get(key).map(String::as_str))?,
        n_fft: num("stemsep.nfft")?,
        hop_length: num("stemsep.hop")?,
        overlap: get("stemsep.overlap")
            .unwrap_or("0.25")
            .parse()
            .map_err(|e| format!("metadata \"stemsep.overlap\": {e}"))?,
        any_length: match get("stemsep.length").unwrap_or("segment") {
            "segment" => false,
            "any" => true,
            other => return Err(format!("metadata \"stemsep.length\": {other:?}")),
        },
    };
    if info.channels() != 2 {
        return Err(format!(
            "{} audio channels; only stereo models are supported",
            info.channels()
        ));
    }
    if info.facts.sample_rate == 0 || info.segment_samples() == 0 || info.sources().is_empty() {
        return Err("sample_rate, segment_samples and sources must be non-empty".into());
    }
    if !(0.0..1.0).contains(&info.overlap) {
        return Err(format!("overlap {} outside 0..1", info.overlap));
    }
    Ok(info)
}
