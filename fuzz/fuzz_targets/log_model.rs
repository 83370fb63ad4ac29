//! libFuzzer entry point for `tasklog_fuzz::log_model` (see its documentation for the input layout).
//! Built only with the `libfuzzer` feature: `cargo fuzz run log_model --features libfuzzer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(error) = tasklog_fuzz::log_model(data) {
        panic!("log_model: {error:#}");
    }
});
