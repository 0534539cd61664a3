//! `loadbench --first-calls N`, as the README promises it: N first calls
//! per system and payload on loopback, each on a new connection, printed
//! as a table row per cell.

mod common;

#[test]
fn first_calls_print_a_row_per_system_and_payload() {
    let dir = tempfile::tempdir().unwrap();
    let ran = common::run(
        env!("CARGO_BIN_EXE_loadbench"),
        &[
            "--first-calls",
            "3",
            "--systems",
            "quicall,grpc-tls",
            "--payloads",
            "64,1048576",
        ],
        Some(dir.path()),
    );
    ran.assert_success();
    for payload in ["64B", "1MiB"] {
        for system in ["quicall", "grpc-tls"] {
            let row = common::line(&ran.stdout, &format!("| {payload} | {system} |"));
            // p50 / p90 / p99 / max, then 3 answered and none failed.
            assert!(row.ends_with("(3, 0) |"), "{row}");
        }
    }
    // The streams that end a closed-loop run are not run after first calls.
    assert!(!ran.stdout.contains("server-stream"), "{}", ran.stdout);
}
