//! libFuzzer entry point for `tasklog_fuzz::frame_decode` (see its documentation for the input layout).
//! Built only with the `libfuzzer` feature: `cargo fuzz run frame_decode --features libfuzzer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(error) = tasklog_fuzz::frame_decode(data) {
        panic!("frame_decode: {error:#}");
    }
});
