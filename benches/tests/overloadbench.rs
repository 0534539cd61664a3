//! `overloadbench`, as the README promises it: one command that measures a
//! cluster's capacity, offers it a multiple of it through each system, and
//! writes the table, the JSON lines and the charts.

mod common;

/// A short run at 5x, quicall adaptive against tonic: every row, and what
/// adaptive admission does there (it sheds; no call runs out of time).
#[test]
fn a_short_run_writes_its_table_lines_and_charts() {
    let dir = tempfile::tempdir().unwrap();
    let ran = common::run(
        env!("CARGO_BIN_EXE_overloadbench"),
        &[
            "--systems",
            "quicall-adaptive,tonic",
            "--tonic-limits",
            "2",
            "--loads",
            "5",
            "--secs",
            "0.6",
            "--rounds",
            "1",
        ],
        Some(dir.path()),
    );
    ran.assert_success();
    assert!(
        ran.stdout.contains("capacity (24 callers back to back)"),
        "{}",
        ran.stdout
    );
    let table = std::fs::read_to_string(dir.path().join("overload.md")).unwrap();
    let adaptive = common::line(&table, "| 5x | quicall adaptive |");
    common::line(&table, "| 5x | tonic limit 2 + load_shed |");
    // Columns: load, system, offered, goodput, of capacity, shed, failed.
    let cells: Vec<&str> = adaptive.split('|').map(str::trim).collect();
    let percent = |cell: &str| cell.trim_end_matches('%').parse::<f64>().unwrap();
    assert!(
        percent(cells[6]) > 0.0,
        "adaptive admission shed nothing: {adaptive}"
    );
    // No pile-up of calls waiting until their deadline (a debug build on a
    // shared machine may lose the odd one).
    assert!(
        percent(cells[7]) < 1.0,
        "adaptive calls ran out of time: {adaptive}"
    );
    let lines = std::fs::read_to_string(dir.path().join("results.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2, "{lines}");
    for chart in ["overload-5x.svg", "overload-goodput.svg"] {
        let svg = std::fs::read_to_string(dir.path().join(chart)).unwrap();
        assert!(svg.contains("quicall adaptive"), "{chart}");
    }
}
