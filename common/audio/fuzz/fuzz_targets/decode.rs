//! Any bytes through the one audio reader: see `oracle.rs` for what must hold.
#![no_main]

#[path = "../oracle.rs"]
mod oracle;

libfuzzer_sys::fuzz_target!(
    // A panic the reader catches is its answer (an error), not a crash: keep the default hook
    // instead of libfuzzer-sys' aborting one. A panic that escapes still aborts the run.
    init: { let _ = std::panic::take_hook(); },
    |data: &[u8]| oracle::check(data)
);
