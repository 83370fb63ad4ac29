//! The `tasklog` binary end to end: `demo` writes a log, `inspect` describes it, `verify` accepts
//! it, and after one flipped byte `verify` fails with the file and offset, with a non-zero exit;
//! `certs` writes a CA and node certificates with private keys and never overwrites silently.

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

#[test]
fn certs_writes_a_ca_and_node_files_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let certs_arg = certs.to_str().unwrap();
    let (ok, text) = tasklog(&[
        "certs",
        "--dir",
        certs_arg,
        "--nodes",
        "1,2,3",
        "--san",
        "db.example.test",
        "--san",
        "10.0.0.7",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("new cluster CA"), "{text}");
    for name in [
        "ca.pem",
        "ca.key",
        "node-1.pem",
        "node-1.key",
        "node-2.pem",
        "node-2.key",
        "node-3.pem",
        "node-3.key",
    ] {
        assert!(certs.join(name).is_file(), "{name} missing: {text}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for name in ["ca.key", "node-1.key", "node-2.key", "node-3.key"] {
            let mode = std::fs::metadata(certs.join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }
    // The files load as TLS material for the transport.
    tasklog_raft::network::TlsMaterial::load_node(&certs, 2).unwrap();

    let key_before = std::fs::read(certs.join("node-1.key")).unwrap();
    let (ok, text) = tasklog(&["certs", "--dir", certs_arg, "--nodes", "1"]);
    assert!(!ok, "a second run must fail: {text}");
    assert!(text.contains("refusing to overwrite"), "{text}");
    assert!(
        text.contains("node-1.pem") && text.contains("--force"),
        "{text}"
    );
    assert_eq!(std::fs::read(certs.join("node-1.key")).unwrap(), key_before);

    // A new node is signed by the existing CA; --force replaces everything.
    let ca_before = std::fs::read(certs.join("ca.pem")).unwrap();
    let (ok, text) = tasklog(&["certs", "--dir", certs_arg, "--nodes", "4"]);
    assert!(ok && text.contains("reused the cluster CA"), "{text}");
    assert_eq!(std::fs::read(certs.join("ca.pem")).unwrap(), ca_before);
    let (ok, text) = tasklog(&["certs", "--dir", certs_arg, "--nodes", "1", "--force"]);
    assert!(ok, "{text}");
    assert_ne!(std::fs::read(certs.join("ca.pem")).unwrap(), ca_before);
    assert_ne!(std::fs::read(certs.join("node-1.key")).unwrap(), key_before);

    let (ok, text) = tasklog(&[
        "certs",
        "--dir",
        certs_arg,
        "--nodes",
        "5",
        "--san",
        "bad name!",
    ]);
    assert!(!ok && text.contains("bad name!"), "{text}");
}
