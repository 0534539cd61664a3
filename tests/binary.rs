//! The `quicall` binary and the `add` examples, run as a user runs them.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::serve_process::listening_address;

/// Waits for `child` with a bound; kills it if it overstays.
fn wait_bounded(mut child: Child, limit: Duration) -> std::process::Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "process did not finish in {limit:?}; stdout:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn demo_runs_to_completion_and_exits_zero() {
    let child = Command::new(env!("CARGO_BIN_EXE_quicall"))
        // Phases of 1 s: the restarted server (phase 4, 2 s) must be found
        // again (its clients' next handshake attempt) and take calls even
        // on a busy machine.
        .args(["demo", "--phase-secs", "1.0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("add(2, 3) = 5").count(), 3, "{stdout}");
    assert_eq!(
        stdout.matches("whoami = \"demo-client\"").count(),
        3,
        "{stdout}"
    );
    assert_eq!(
        stdout.matches(": refused (UNAUTHENTICATED").count(),
        9,
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("count(5) streamed [0, 1, 2, 3, 4]").count(),
        3,
        "{stdout}"
    );
    for phase in [
        "1. all three",
        "2. server-2 made 20x slower",
        "3. server-3 killed",
        "4. server-3 restarted",
        "5. one server stream through the cluster: 1000000 messages in order",
        "6. load spike",
        "   adaptive ",
    ] {
        assert!(stdout.contains(phase), "phase {phase:?} missing: {stdout}");
    }
    assert!(stdout.contains("failed idempotent calls: 0"), "{stdout}");
    assert!(stdout.contains("demo finished"), "{stdout}");
}

#[test]
fn certs_command_writes_a_usable_cluster_pki() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quicall"))
        .arg("certs")
        .arg("--out")
        .arg(dir.path())
        .args(["--server", "node-1,localhost,127.0.0.1", "--client", "ops"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [
        "ca.crt",
        "ca.key",
        "node-1.crt",
        "node-1.key",
        "ops.crt",
        "ops.key",
    ] {
        assert!(dir.path().join(file).exists(), "{file} missing");
    }
    // A second run adds a node signed by the same CA.
    let ca_before = std::fs::read(dir.path().join("ca.crt")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quicall"))
        .arg("certs")
        .arg("--out")
        .arg(dir.path())
        .args(["--server", "node-2,localhost"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(std::fs::read(dir.path().join("ca.crt")).unwrap(), ca_before);

    // serve + call with those files, over mutual TLS.
    let mut server = Command::new(env!("CARGO_BIN_EXE_quicall"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--cert")
        .arg(dir.path().join("node-2.crt"))
        .arg("--key")
        .arg(dir.path().join("node-2.key"))
        .arg("--ca")
        .arg(dir.path().join("ca.crt"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening_address(&mut server);
    let call = |args: &[&str], with_cert: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quicall"));
        cmd.arg("call")
            .args(["--server", &addr, "--server-name", "localhost"])
            .arg("--ca")
            .arg(dir.path().join("ca.crt"));
        if with_cert {
            cmd.arg("--cert")
                .arg(dir.path().join("ops.crt"))
                .arg("--key")
                .arg(dir.path().join("ops.key"));
        }
        cmd.args(args).output().unwrap()
    };
    let add = call(&["add", "2", "3"], true);
    let who = call(&["whoami"], true);
    let anonymous = call(&["add", "2", "3"], false);
    server.kill().unwrap();
    let _ = server.wait();
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&add.stdout).trim(), "5");
    assert_eq!(String::from_utf8_lossy(&who.stdout).trim(), "ops");
    assert!(!anonymous.status.success());
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("UNAUTHENTICATED"));
}

#[test]
fn add_examples_print_five() {
    let examples = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples");
    let server_bin = examples.join("add_server");
    let client_bin = examples.join("add_client");
    assert!(
        server_bin.exists() && client_bin.exists(),
        "cargo test builds the examples"
    );
    let mut server = Command::new(&server_bin)
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening_address(&mut server);
    let client = Command::new(&client_bin)
        .arg(&addr)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(client, Duration::from_secs(60));
    server.kill().unwrap();
    let _ = server.wait();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5");
}

#[test]
fn revoked_client_is_refused_by_serve_with_a_crl() {
    let dir = tempfile::tempdir().unwrap();
    let quicall = || Command::new(env!("CARGO_BIN_EXE_quicall"));
    let out = quicall()
        .arg("certs")
        .arg("--out")
        .arg(dir.path())
        .args([
            "--server",
            "node,localhost",
            "--client",
            "ops",
            "--client",
            "eve",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = quicall()
        .arg("certs")
        .arg("--out")
        .arg(dir.path())
        .args(["--revoke", "eve"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = |name: &str| dir.path().join(name);
    let mut server = quicall()
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--cert")
        .arg(file("node.crt"))
        .arg("--key")
        .arg(file("node.key"))
        .arg("--ca")
        .arg(file("ca.crt"))
        .arg("--crl")
        .arg(file("ca.crl"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening_address(&mut server);
    let whoami = |who: &str| {
        quicall()
            .arg("call")
            .args(["--server", &addr, "--server-name", "localhost"])
            .arg("--ca")
            .arg(file("ca.crt"))
            .arg("--cert")
            .arg(file(&format!("{who}.crt")))
            .arg("--key")
            .arg(file(&format!("{who}.key")))
            .arg("whoami")
            .output()
            .unwrap()
    };
    let ops = whoami("ops");
    let eve = whoami("eve");
    server.kill().unwrap();
    let _ = server.wait();
    assert_eq!(String::from_utf8_lossy(&ops.stdout).trim(), "ops");
    assert!(!eve.status.success());
    let err = String::from_utf8_lossy(&eve.stderr);
    assert!(
        err.contains("UNAUTHENTICATED") && err.contains("revoked"),
        "{err}"
    );
}

/// `quicall call` to the server at `addr`, with the certificates that
/// `write_certs` wrote in `dir` (client `ops`).
fn call_command(dir: &std::path::Path, addr: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quicall"));
    command
        .arg("call")
        .args(["--server", addr, "--server-name", "localhost"])
        .arg("--ca")
        .arg(dir.join("ca.crt"))
        .arg("--cert")
        .arg(dir.join("ops.crt"))
        .arg("--key")
        .arg(dir.join("ops.key"));
    command
}

/// Runs `quicall call ARGS` against the server at `addr` (see
/// [`call_command`]) and waits for it, at most 30 s.
fn run_call(dir: &std::path::Path, addr: &str, args: &[&str]) -> std::process::Output {
    let child = call_command(dir, addr)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_bounded(child, Duration::from_secs(30))
}

#[test]
fn call_reaches_any_method_by_name_with_a_raw_body() {
    use common::serve_process::{ServeProcess, write_certs};
    let dir = tempfile::tempdir().unwrap();
    write_certs(dir.path());
    let server = ServeProcess::start(dir.path(), "127.0.0.1:0");
    let call = |args: &[&str]| run_call(dir.path(), &server.addr, &[&["raw"], args].concat());
    // calc.Calc/Add with 2 and 3 as little-endian i64 (docs/wire.md, section 10).
    let out = call(&[
        "calc.Calc/Add",
        "--hex",
        "0200000000000000 0300000000000000",
        "--hex-output",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0500000000000000"
    );
    let out = call(&["demo.Echo/Echo", "--text", "hello", "--idempotent"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");
    // A method the server does not have: the status, named, and a failure.
    let out = call(&["kv.Store/Get", "--text", "apple"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("UNKNOWN_METHOD") && stderr.contains("kv.Store/Get"),
        "{stderr}"
    );
    // A body that does not fit: INVALID_ARGUMENT.
    let out = call(&["calc.Calc/Add", "--hex", "01"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("INVALID_ARGUMENT"));
}

#[test]
fn call_prints_a_server_stream_message_by_message() {
    use common::serve_process::{ServeProcess, write_certs};
    let dir = tempfile::tempdir().unwrap();
    write_certs(dir.path());
    let server = ServeProcess::start(dir.path(), "127.0.0.1:0");
    let call = |args: &[&str]| run_call(dir.path(), &server.addr, &[&["stream"], args].concat());
    // demo.Count/Up with 5 (a little-endian u64): 0 to 4, one per line.
    let out = call(&[
        "demo.Count/Up",
        "--hex",
        "0500000000000000",
        "--hex-output",
        "--idempotent",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = (0u64..5)
        .map(|n| n.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    assert_eq!(lines, expected);
    // A stream the server does not have: the status, and a failure.
    let out = call(&["kv.Store/List", "--text", "user/"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("UNKNOWN_METHOD") && stderr.contains("kv.Store/List"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    // A unary method called as a stream (the request does not say which
    // for server streams: docs/wire.md, section 15): an error that says so.
    let out = call(&["demo.Echo/Echo", "--text", "hi"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is the method server-streaming"),
        "{stderr}"
    );
}

#[test]
fn call_sends_metadata_and_prints_the_answers_with_verbose() {
    use common::serve_process::{ServeProcess, write_certs};
    let dir = tempfile::tempdir().unwrap();
    write_certs(dir.path());
    let server = ServeProcess::start(dir.path(), "127.0.0.1:0");
    let out = run_call(
        dir.path(),
        &server.addr,
        &[
            "-H",
            "tenant: acme",
            "-H",
            "request-id:42",
            "-v",
            "echo",
            "hello",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");
    // Sent, and (the demo's echo sends the caller's metadata back) received.
    for line in [
        "> tenant: acme",
        "> request-id: 42",
        "< tenant: acme",
        "< request-id: 42",
    ] {
        assert!(
            stderr.lines().any(|l| l == line),
            "no {line:?} in\n{stderr}"
        );
    }
}

/// `quicall serve` on free loopback ports, with metrics over HTTP, the
/// certificates `write_certs` wrote in `dir`, its output piped.
fn serve_with_metrics(dir: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_quicall"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
        .arg("--cert")
        .arg(dir.join("node.crt"))
        .arg("--key")
        .arg(dir.join("node.key"))
        .arg("--ca")
        .arg(dir.join("ca.crt"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Every line `child` prints, as it prints it, until it exits (a thread
/// reads them, so the child never writes to a full pipe).
fn output_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    rx
}

#[test]
fn serve_exports_metrics_for_prometheus() {
    use common::serve_process::write_certs;
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    write_certs(dir.path());
    let mut server = serve_with_metrics(dir.path());
    let rx = output_lines(&mut server);
    let first = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let addr = first
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap()
        .to_owned();
    let second = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let metrics = second
        .trim()
        .strip_prefix("metrics on http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{second:?}"))
        .to_owned();
    let out = run_call(dir.path(), &addr, &["--count", "3", "echo", "hi"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut stream = std::net::TcpStream::connect(&metrics).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        response
            .lines()
            .any(|l| l == r#"quicall_server_calls_total{method="demo.Echo/Echo",code="OK"} 3"#),
        "{response}"
    );
}

#[test]
fn certs_writes_kubernetes_secrets_of_the_files_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quicall"))
        .arg("certs")
        .arg("--out")
        .arg(dir.path())
        .args([
            "--server",
            "node,localhost",
            "--client",
            "ops",
            "--k8s-secret",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    for node in ["node", "ops"] {
        let secret = read(&format!("{node}.secret.yaml"));
        assert!(
            secret.contains(&format!("  name: quicall-{node}\n")),
            "{secret}"
        );
        assert!(secret.contains("type: kubernetes.io/tls\n"));
        // Each PEM file, line by line, indented under its key.
        for (key, file) in [
            ("tls.crt", format!("{node}.crt")),
            ("tls.key", format!("{node}.key")),
            ("ca.crt", "ca.crt".to_owned()),
        ] {
            let block: String = read(&file).lines().map(|l| format!("    {l}\n")).collect();
            assert!(
                secret.contains(&format!("  {key}: |\n{block}")),
                "{key} of {node}"
            );
        }
    }
    // A name Kubernetes cannot take is refused, saying why.
    let out = Command::new(env!("CARGO_BIN_EXE_quicall"))
        .arg("certs")
        .arg("--out")
        .arg(dir.path())
        .args(["--client", "Ops_1", "--k8s-secret"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Kubernetes Secret"));
}

#[test]
fn serve_shuts_down_gracefully_on_sigterm_and_ctrl_c() {
    use common::serve_process::write_certs;
    use nix::sys::signal::Signal;
    let dir = tempfile::tempdir().unwrap();
    write_certs(dir.path());
    // SIGTERM (Kubernetes, systemd) and SIGINT (Ctrl-C), as the README says.
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut child = serve_with_metrics(dir.path());
        let rx = output_lines(&mut child);
        // Up once it names its metrics address (the probes' endpoint).
        let started = Instant::now();
        while !rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap()
            .starts_with("metrics on http://")
        {
            assert!(started.elapsed() < Duration::from_secs(30));
        }
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let out = wait_bounded(child, Duration::from_secs(30));
        assert!(out.status.success(), "{signal}: {:?}", out.status);
        let rest: Vec<String> = rx.iter().collect();
        assert!(
            rest.iter().any(|l| l.starts_with("shutting down"))
                && rest.iter().any(|l| l == "stopped; 0 calls cut off"),
            "{signal}: {rest:?}"
        );
    }
}
