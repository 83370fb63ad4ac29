//! libFuzzer entry point for `tasklog_fuzz::event_batch` (see its documentation for the input layout).
//! Built only with the `libfuzzer` feature: `cargo fuzz run event_batch --features libfuzzer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(error) = tasklog_fuzz::event_batch(data) {
        panic!("event_batch: {error:#}");
    }
});
