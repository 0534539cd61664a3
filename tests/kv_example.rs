//! The README's kv example, run as a user runs it: `kv_server`, then
//! `kv_client` against its three replicas, as processes of their own.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn example(name: &str) -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "cargo build --example {name}");
    let deps = std::env::current_exe().unwrap();
    deps.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
}

#[test]
fn the_kv_client_runs_against_the_kv_server() {
    let server_bin = example("kv_server");
    let client_bin = example("kv_client");
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new(server_bin)
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for its "Ctrl-C stops" line: the addresses are written.
    let stdout = server.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let ready = line.contains("Ctrl-C stops");
            let _ = tx.send(line);
            if ready {
                break;
            }
        }
    });
    let mut replicas = 0;
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("kv_server started");
        replicas += usize::from(line.starts_with("kv.Store replica on 127.0.0.1:"));
        if line.contains("Ctrl-C stops") {
            break;
        }
    }
    assert_eq!(replicas, 3);

    let output = Command::new(client_bin)
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "get user/00042: 42 bytes",
        "list user/: 5000 entries, user/00000 (0 bytes) .. user/04999 (99 bytes)",
        "list user/01, limit 10: 10 entries\n",
        "delete user/00042: true",
        "get user/00042: NOT_FOUND: no key user/00042",
        "stats: 4999 keys, 297448 bytes",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
}
