//! Replays every request body the `separate_body` fuzzer kept or found a fault with
//! (`rest/fuzz/corpus/separate_body/`, `rest/fuzz/regressions/separate_body/`) through the
//! fuzzer's own oracle, on stable: what was fixed stays fixed without nightly or cargo-fuzz.

use std::path::Path;

#[path = "../../fuzz/oracle.rs"]
mod oracle;

#[test]
fn every_kept_body_satisfies_the_upload_oracle() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let ran = stemsep_testkit::replay_fuzz_corpus(&fuzz, "separate_body", 2400, oracle::check);
    eprintln!("{ran} bodies replayed");
}
