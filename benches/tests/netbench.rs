//! `netbench`, as the README promises it: one command that runs the
//! comparison on a lossy path and writes the table, the JSON lines and the
//! charts; and, where no lab can be made, a line saying why and status 2.

use std::process::Command;

mod common;
use common::is_root;

/// Where the lab cannot be made (here: not root), say so and exit 2.
#[test]
fn without_a_lab_it_says_why_and_exits_2() {
    if !is_root() || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIPPED: needs root and setpriv to run netbench as another user");
        return;
    }
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_netbench"))
        .args(["--secs", "0.1", "--out", "/nonexistent/netbench"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("network lab") && stderr.contains("not running as root"),
        "{stderr}"
    );
}

/// A one-cell matrix: two systems at 1% loss; its table, JSON lines and
/// chart, with the loss the lab applied.
#[test]
fn a_small_matrix_writes_its_table_lines_and_chart() {
    let Some((dir, ran)) = in_a_lab(&["--concurrency", "1", "--secs", "0.3"]) else {
        return;
    };
    // Every row as it goes, then the table.
    common::line(&ran.stdout, "quicall ");
    common::line(&ran.stdout, "grpc-tls ");
    let table = std::fs::read_to_string(dir.path().join("matrix.md")).unwrap();
    assert!(table.contains("#### no added delay"), "{table}");
    let row = common::line(&table, "| 1% (");
    // The loss set, the loss measured, the cell, both systems, four targets.
    assert!(row.contains("| 64 B | 1 |"), "{row}");
    assert_eq!(row.split('|').count(), 9 + 2, "{row}");
    assert!(table.contains("Targets met:"), "{table}");
    let lines = std::fs::read_to_string(dir.path().join("results.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        assert_eq!(line["loss_pct"], 1.0);
        assert_eq!(line["errors"], 0);
        assert!(line["calls"].as_u64().unwrap() > 0, "{line}");
    }
    let chart = std::fs::read_to_string(dir.path().join("p999-rtt0ms-64B.svg")).unwrap();
    assert!(chart.starts_with("<svg") && chart.contains("quicall"));
}

/// `--first-calls N`: N first calls per system on each path, each on a new
/// connection, every one answered, in `first-calls.md`.
#[test]
fn first_calls_write_their_table() {
    let Some((dir, _)) = in_a_lab(&["--first-calls", "3"]) else {
        return;
    };
    let table = std::fs::read_to_string(dir.path().join("first-calls.md")).unwrap();
    for system in ["quicall", "grpc-tls"] {
        let row = common::line(&table, &format!("| 1% | 0 ms | {system} |"));
        // p50 / p90 / p99 / max, then 3 answered and none failed.
        assert!(row.ends_with("(3, 0) |"), "{row}");
    }
}

/// The one cell both lab tests run: two systems on one path, 1% loss and
/// no added delay, 64 B calls.
const ONE_CELL: [&str; 8] = [
    "--systems",
    "quicall,grpc-tls",
    "--loss-pct",
    "1",
    "--rtt-ms",
    "0",
    "--payloads",
    "64",
];

/// Runs netbench on [`ONE_CELL`] with `args` more and `--out` a new folder,
/// where a network lab can be made (root; else a skip): the folder and how
/// it ended, which must be well.
fn in_a_lab(args: &[&str]) -> Option<(tempfile::TempDir, common::Ran)> {
    if !is_root() {
        eprintln!("SKIPPED: the network lab needs root");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let args = [ONE_CELL.as_slice(), args].concat();
    let ran = common::run(env!("CARGO_BIN_EXE_netbench"), &args, Some(dir.path()));
    if ran.without_lab() {
        return None;
    }
    ran.assert_success();
    Some((dir, ran))
}
