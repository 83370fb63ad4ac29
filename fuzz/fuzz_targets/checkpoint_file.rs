//! libFuzzer entry point for `tasklog_fuzz::checkpoint_file` (see its documentation for the input layout).
//! Built only with the `libfuzzer` feature: `cargo fuzz run checkpoint_file --features libfuzzer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(error) = tasklog_fuzz::checkpoint_file(data) {
        panic!("checkpoint_file: {error:#}");
    }
});
