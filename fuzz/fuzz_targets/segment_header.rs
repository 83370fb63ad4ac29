//! libFuzzer entry point for `tasklog_fuzz::segment_header` (see its documentation for the input layout).
//! Built only with the `libfuzzer` feature: `cargo fuzz run segment_header --features libfuzzer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(error) = tasklog_fuzz::segment_header(data) {
        panic!("segment_header: {error:#}");
    }
});
