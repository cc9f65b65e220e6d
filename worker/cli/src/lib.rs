//! What stemsep's command-line tools share: where the checkout's demo model is, what files a
//! separated song gives ([`outputs`]: stems, mixes, names), and separation
//! quality against ground truth ([`quality`], for `evaluate` and the demo-model test). Not part
//! of the service.
#![warn(missing_docs)]

pub mod outputs;
pub mod quality;

/// The demo model committed in the checkout this crate was built from (model/README.md): the
/// `separate` tool's model when none is given, and the subject of the demo-model test.
pub const DEMO_MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../model/default/htdemucs.onnx"
);
