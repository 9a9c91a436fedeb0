//! Operation sequences against the shadow model (see `apex_fuzz::engine`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    apex_fuzz::run(data, apex_fuzz::Mode::Ops);
});
