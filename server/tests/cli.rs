//! The `tasklog` binary end to end: `demo` writes a log, `inspect` describes it, `verify` accepts
//! it, and after one flipped byte `verify` fails with the file and offset, with a non-zero exit.

use std::process::Command;

fn tasklog(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tasklog"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn demo_inspect_verify_and_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let (ok, text) = tasklog(&[
        "demo",
        "--data-dir",
        data,
        "--events",
        "2000",
        "--writers",
        "4",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("positions 1..=2000"), "{text}");
    let (ok, text) = tasklog(&["inspect", data]);
    assert!(ok && text.contains("positions       1..=2000"), "{text}");
    let (ok, text) = tasklog(&["verify", "--quiet", data]);
    assert!(ok && text.starts_with("ok: 2000 records"), "{text}");

    let segment = std::path::Path::new(data).join("00000000000000000001.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[64 + 1000] ^= 0x01;
    std::fs::write(&segment, bytes).unwrap();
    let (ok, text) = tasklog(&["verify", "--quiet", data]);
    assert!(!ok, "verify must fail on a flipped byte: {text}");
    assert!(text.contains("00000000000000000001.seg"), "{text}");
    let (ok, text) = tasklog(&[
        "verify",
        "--quiet",
        dir.path().join("nothing").to_str().unwrap(),
    ]);
    assert!(!ok, "{text}");
}
