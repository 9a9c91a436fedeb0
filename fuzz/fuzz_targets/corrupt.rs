//! Operation sequences plus heap corruption (see `apex_fuzz::attack`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    apex_fuzz::run(data, apex_fuzz::Mode::Corrupt);
});
