//! Any request body through the upload checks: see `oracle.rs` for what must hold.
#![no_main]

#[path = "../oracle.rs"]
mod oracle;

libfuzzer_sys::fuzz_target!(
    // A panic the audio reader catches is its answer (an error), not a crash: keep the default
    // hook instead of libfuzzer-sys' aborting one. A panic that escapes still aborts the run.
    init: { let _ = std::panic::take_hook(); },
    |body: &[u8]| oracle::check(body)
);
