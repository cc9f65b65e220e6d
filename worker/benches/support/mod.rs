//! What the engine benches share.

use std::path::PathBuf;

/// `$STEMSEP_BENCH_MODEL`, else the full-size random-init htdemucs export `make bench-engine`
/// makes under `~/.cache/stemsep/models/`.
pub fn model_path() -> PathBuf {
    std::env::var_os("STEMSEP_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/stemsep/models/htdemucs-random.onnx")
        })
}
