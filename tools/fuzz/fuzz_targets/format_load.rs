//! Fuzz target: `spore::format::load` on arbitrary bytes must return `Ok` or a code -200
//! error and never panic; whatever loads must round-trip (`spore::format::fuzz_one`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = spore::format::fuzz_one(data) {
        // A broken property is a finding, like a panic inside the loader.
        panic!("{e}");
    }
});
