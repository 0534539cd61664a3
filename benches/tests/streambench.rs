//! `streambench`, as the README and docs/benchmarks.md run it: for each
//! size, a server stream and a bidirectional echo at full speed, then an
//! echo paced at a rate both systems carry, quicall and tonic in the same
//! run, each row counting every message.

mod common;

#[test]
fn every_stream_prints_its_row_and_the_paced_echo_offers_both_the_same_rate() {
    let ran = common::run(
        env!("CARGO_BIN_EXE_streambench"),
        &[
            "--stream-sizes",
            "64,16384",
            "--small-messages",
            "20000",
            "--large-messages",
            "2000",
            "--paced-secs",
            "0.2",
            "--unary-secs",
            "0.1",
        ],
        None,
    );
    ran.assert_success();
    let stdout = &ran.stdout;
    let row = |system: &str, shape: &str, size: &str| -> Vec<String> {
        let line = stdout
            .lines()
            .find(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 4 && f[0] == system && f[1] == shape && f[2] == size
            })
            .unwrap_or_else(|| panic!("no {system} {shape} {size} B row in\n{stdout}"));
        line.split_whitespace().map(str::to_owned).collect()
    };
    for (size, n) in [("64", 20_000), ("16384", 2_000)] {
        for system in ["quicall", "grpc-tls"] {
            for shape in ["server-stream", "bidi-echo"] {
                assert_eq!(row(system, shape, size)[4], n.to_string(), "{stdout}");
            }
        }
        // The paced echo: the same number of messages for both, offered at
        // half the slower one's rate for 0.2 s (at least one message).
        let paced = row("quicall", "paced-echo", size)[4].clone();
        assert_eq!(row("grpc-tls", "paced-echo", size)[4], paced, "{stdout}");
        assert!(paced.parse::<u64>().unwrap() >= 1, "{stdout}");
        assert!(
            stdout.contains(&format!("paced echo of {size} B: ")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("quicall unary calls of 64 B"), "{stdout}");
}
