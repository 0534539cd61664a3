//! `loadbench --first-calls N`, as the README promises it: N first calls
//! per system and payload on loopback, each on a new connection, printed
//! as a table row per cell.

use std::process::Command;

#[test]
fn first_calls_print_a_row_per_system_and_payload() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_loadbench"))
        .args(["--first-calls", "3", "--systems", "quicall,grpc-tls"])
        .args(["--payloads", "64,1048576"])
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for payload in ["64B", "1MiB"] {
        for system in ["quicall", "grpc-tls"] {
            let row = stdout
                .lines()
                .find(|l| l.starts_with(&format!("| {payload} | {system} |")))
                .unwrap_or_else(|| panic!("no row for {payload} {system}: {stdout}"));
            // p50 / p90 / p99 / max, then 3 answered and none failed.
            assert!(row.ends_with("(3, 0) |"), "{row}");
        }
    }
    // The streams that end a closed-loop run are not run after first calls.
    assert!(!stdout.contains("server-stream"), "{stdout}");
}
