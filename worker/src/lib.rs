//! stemsep worker library: the separation engine (HT-Demucs core in ONNX run by tract, with the
//! STFT/iSTFT, chunking and MP3 codec on the host) shared by the queue worker and the `separate` CLI.
#![warn(missing_docs)]

pub mod engine;
pub mod quality;

// The queue worker (stemsep-worker binary), owned separately from the engine.
pub mod callback;
pub mod config;
pub mod error;
pub mod metrics;
pub mod models;
pub mod runner;

pub use engine::{EngineConfig, EngineError, ModelInfo, SeparateOptions, Separator};

/// The demo model committed in the checkout this crate was built from (model/README.md, section 7):
/// the `separate` CLI's model when none is given, and the subject of the demo-model test.
pub const DEMO_MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../model/default/htdemucs.onnx"
);
