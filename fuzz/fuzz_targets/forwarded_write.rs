//! libFuzzer entry point for `tasklog_fuzz::forwarded_write` (see its documentation).
//! Built only with the `libfuzzer` feature: `cargo fuzz run forwarded_write --features libfuzzer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(error) = tasklog_fuzz::forwarded_write(data) {
        panic!("forwarded_write: {error:#}");
    }
});
