//! Replays every input the `decode` fuzzer kept or found a fault with (`fuzz/corpus/decode/`,
//! `fuzz/regressions/decode/`) through the fuzzer's own oracle, on stable: what was fixed stays
//! fixed without nightly or cargo-fuzz.

use std::path::Path;

#[path = "../fuzz/oracle.rs"]
mod oracle;

#[test]
fn every_kept_input_satisfies_the_decode_oracle() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let ran = stemsep_testkit::replay_fuzz_corpus(&fuzz, "decode", 2000, oracle::check);
    eprintln!("{ran} inputs replayed");
}
