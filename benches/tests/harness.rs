//! The harness itself: short bounded runs of each mode and system finish and
//! write well-formed output, and the open loop charges a slow server for the
//! calls queued behind it (coordinated omission corrected).

use std::sync::Arc;
use std::time::Duration;

use quicall::Limits;
use quicall_benches::harness::output::{self, Row};
use quicall_benches::harness::systems::Pki;
use quicall_benches::harness::{Echo, System, Workload, closed_loop, open_loop};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_system_and_mode_runs_and_writes_well_formed_output() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new().unwrap();
    for system in System::all() {
        let echo = Arc::new(Echo::start(system, &pki, &Limits::default()).await.unwrap());
        let workload = Workload {
            payload: 1000,
            concurrency: 4,
        };
        let closed = closed_loop(echo.clone(), workload, Duration::from_millis(150)).await;
        assert!(closed.calls > 0 && closed.errors == 0, "{system}");
        let open = open_loop(echo, 1000, 500.0, Duration::from_millis(150), 100).await;
        assert!(open.calls > 0 && open.errors == 0, "{system}");
        for (mode, outcome, rate) in [("closed", &closed, None), ("open", &open, Some(500.0))] {
            let row = Row {
                system: system.name(),
                mode,
                payload: 1000,
                concurrency: 4,
                rate,
                outcome,
            };
            let json: serde_json::Value =
                serde_json::from_str(&output::json(&row)).expect("valid JSON");
            assert_eq!(json["system"], system.name());
            assert_eq!(json["calls"], outcome.calls);
            assert!(json["p99_us"].as_u64().unwrap() >= json["p50_us"].as_u64().unwrap());
            let path = dir.path().join(format!("{system}-{mode}.hgrm"));
            output::write_hgrm(&path, &outcome.histogram).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            let mut last = (0.0f64, 0.0f64);
            let mut lines = 0;
            for line in text
                .lines()
                .skip(2)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                let fields: Vec<f64> = line
                    .split_whitespace()
                    .take(3)
                    .map(|f| f.parse().unwrap())
                    .collect();
                assert!(
                    fields[0] >= last.0 && fields[1] >= last.1,
                    "monotonic: {line}"
                );
                last = (fields[0], fields[1]);
                lines += 1;
            }
            assert!(
                lines > 1 && (last.1 - 1.0).abs() < 1e-9,
                "ends at percentile 1.0"
            );
            assert!(text.contains(&format!("Total count    = {:>12}", outcome.calls)));
        }
        let svg = dir.path().join(format!("{system}.svg"));
        output::write_svg(
            &svg,
            "test",
            &[("closed", &closed.histogram), ("open", &open.histogram)],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&svg).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "an SVG document"
        );
        assert!(
            svg.contains("closed") && svg.contains("open"),
            "with a legend"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_charges_a_slow_server_for_the_queue_behind_it() {
    let pki = Pki::new().unwrap();
    let knobs = Arc::new(quicall::demo::Knobs::default());
    knobs.set_service_time(Duration::from_millis(20));
    let echo = Arc::new(
        Echo::start_with(System::Quicall, &pki, &Limits::default(), knobs, None)
            .await
            .unwrap(),
    );
    // One call at a time, each taking 20 ms, but one due every 10 ms: the
    // queue grows by 10 ms a call. 30 calls: the last waits about 300 ms.
    let open = open_loop(echo.clone(), 64, 100.0, Duration::from_millis(300), 1).await;
    assert_eq!(open.calls, 30);
    let closed = closed_loop(
        echo,
        Workload {
            payload: 64,
            concurrency: 1,
        },
        Duration::from_millis(200),
    )
    .await;
    // Each call takes about 20 ms on its own...
    assert!(
        closed.us(0.5) >= 20_000 && closed.us(0.5) < 100_000,
        "closed p50 {} µs",
        closed.us(0.5)
    );
    // ...but measured from their intended starts the queued ones are far later.
    assert!(
        open.histogram.max() >= 250_000,
        "open max {} µs",
        open.histogram.max()
    );
    assert!(
        open.us(0.5) >= 3 * closed.us(0.5),
        "open p50 {} µs",
        open.us(0.5)
    );
}

#[test]
fn servers_run_on_a_runtime_of_their_own_in_the_split_layout() {
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()
            .unwrap()
    };
    let (clients, servers) = (runtime("client"), runtime("server"));
    let pki = Pki::new().unwrap();
    clients.block_on(async {
        for system in System::all() {
            let knobs = Arc::new(quicall::demo::Knobs::default());
            let echo = Echo::start_with(
                system,
                &pki,
                &Limits::default(),
                knobs,
                Some(servers.handle()),
            )
            .await
            .unwrap();
            let workload = Workload {
                payload: 1000,
                concurrency: 4,
            };
            let closed = closed_loop(Arc::new(echo), workload, Duration::from_millis(150)).await;
            assert!(closed.calls > 0 && closed.errors == 0, "{system}");
        }
    });
    servers.shutdown_timeout(Duration::from_secs(5));
}

#[test]
fn every_system_calls_across_a_lossy_delayed_network_lab() {
    // 2% loss and a 2 ms round trip: the paths `netbench` measures.
    let path = quicall_netlab::Path {
        loss: 0.02,
        delay: Duration::from_millis(1),
        ..quicall_netlab::Path::default()
    };
    let lab = match quicall_netlab::Lab::new(&["server", "client"], path) {
        Ok(lab) => lab,
        Err(e @ quicall_netlab::LabError::Unavailable(_)) => {
            eprintln!("SKIPPED: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let on = |name: &str| {
        let host = lab.host(name).clone();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .on_thread_start(move || host.enter().unwrap())
            .enable_all()
            .build()
            .unwrap()
    };
    let (servers, clients) = (on("server"), on("client"));
    let server_ip = lab.host("server").addr().into();
    let handle = servers.handle().clone();
    let outcomes = clients
        .block_on(clients.spawn(async move {
            let pki = Pki::new().unwrap();
            let mut outcomes = Vec::new();
            for system in System::all() {
                let knobs = Arc::new(quicall::demo::Knobs::default());
                let limits = Limits::default();
                let echo = Echo::start_at(system, &pki, &limits, knobs, (Some(&handle), server_ip))
                    .await
                    .unwrap();
                let workload = Workload {
                    payload: 20_000,
                    concurrency: 8,
                };
                let run = closed_loop(Arc::new(echo), workload, Duration::from_millis(300)).await;
                outcomes.push((system, run.calls, run.errors));
            }
            outcomes
        }))
        .unwrap();
    for (system, calls, errors) in outcomes {
        assert!(
            calls > 0 && errors == 0,
            "{system}: {calls} calls, {errors} errors"
        );
    }
    let (received, dropped) = lab.host("client").received_and_dropped().unwrap();
    assert!(dropped > 0, "the lab dropped {dropped} of {received}");
    drop((servers, clients));
}
