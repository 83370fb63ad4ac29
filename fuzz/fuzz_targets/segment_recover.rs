//! libFuzzer entry point for `tasklog_fuzz::segment_recover` (see its documentation for the input layout).
//! Built only with the `libfuzzer` feature: `cargo fuzz run segment_recover --features libfuzzer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(error) = tasklog_fuzz::segment_recover(data) {
        panic!("segment_recover: {error:#}");
    }
});
