//! The reference's own client examples (§ 2.0 live, § 3.0 and § 3.2
//! historic; Python and Node.js) run against the simulator with only the
//! host and scheme changed, and print records.
//!
//! Needs python3 with `websocket-client` + `requests` and node with `ws` in
//! tests/reference_clients/node_modules: run `scripts/install-test-clients`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use studio_relay::config::Secret;
use studio_relay::simulator::{spawn, SimulateArgs, SimulatorHandle};
use tokio::io::{AsyncBufReadExt, BufReader};

const TOKEN: &str = "reference-token";
const INSTALL: &str = "run scripts/install-test-clients";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference_clients")
}

fn check_runtimes() {
    let py = std::process::Command::new("python3")
        .args(["-c", "import websocket, requests"])
        .output();
    assert!(
        py.as_ref().is_ok_and(|o| o.status.success()),
        "python3 with websocket-client and requests is missing ({INSTALL}): {py:?}"
    );
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is missing ({INSTALL})"
    );
    assert!(
        dir().join("node_modules/ws/package.json").exists(),
        "node module ws is missing ({INSTALL})"
    );
}

/// The example text with the Telavox hosts replaced by the simulator.
fn localized(sim: &SimulatorHandle, file: &str) -> PathBuf {
    let text = std::fs::read_to_string(dir().join(file)).expect("read example");
    let host = sim.addr().to_string();
    let text = text
        .replace(
            "wss://statistics-webhook.telavox.se",
            &format!("ws://{host}"),
        )
        .replace(
            "https://statistics-api.telavox.se",
            &format!("http://{host}"),
        );
    // Next to the original so node resolves `ws` from ./node_modules.
    let out = dir().join(format!(".tmp-{}-{}", sim.addr().port(), file));
    std::fs::write(&out, text).expect("write localized example");
    out
}

/// Runs `program file` until a stdout line contains `needle` (then kills it;
/// for the live examples that never exit) or, with an empty needle, until it
/// exits; returns everything it printed.
async fn run_until(program: &str, file: &Path, needle: &str) -> String {
    let mut child = tokio::process::Command::new(program)
        .arg(file)
        .env("TELAVOX_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program} ({INSTALL}): {e}"));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut printed = String::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            printed.push_str(&line);
            printed.push('\n');
            if !needle.is_empty() && line.contains(needle) {
                return true;
            }
        }
        needle.is_empty()
    })
    .await
    .unwrap_or(false);
    let _ = child.kill().await;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = tokio::time::timeout(Duration::from_secs(2), e.read_to_string(&mut err)).await;
    }
    let _ = std::fs::remove_file(file);
    assert!(
        found && !printed.is_empty(),
        "{program} {} printed no record containing {needle:?}\nstdout:\n{printed}\nstderr:\n{err}",
        file.display()
    );
    printed
}

fn history_days_back_to_october_2025() -> u32 {
    let oct = chrono::DateTime::parse_from_rfc3339("2025-10-01T00:00:00Z")
        .expect("date")
        .timestamp_millis();
    ((chrono::Utc::now().timestamp_millis() - oct) / 86_400_000 + 2) as u32
}

#[tokio::test]
async fn reference_examples_print_records() {
    check_runtimes();
    // The historic examples ask for October 2025: pre-generate history back to it.
    let sim = spawn(SimulateArgs {
        listen: "127.0.0.1:0".parse().expect("addr"),
        tokens: vec![Secret::new(TOKEN)],
        speed: 3600.0,
        rate: 20.0,
        seed: 3,
        history_days: history_days_back_to_october_2025(),
        ..SimulateArgs::default()
    })
    .await
    .expect("spawn");

    let out = run_until("python3", &localized(&sim, "live_calls.py"), "'id_call'").await;
    assert!(out.contains("'call_direction'"), "{out}");
    let out = run_until(
        "node",
        &localized(&sim, "live_calls.mjs"),
        "customer_target",
    )
    .await;
    assert!(
        out.contains("id_call") && out.contains("call_direction"),
        "{out}"
    );

    let out = run_until(
        "python3",
        &localized(&sim, "historic_connect.py"),
        "totalCount",
    )
    .await;
    assert!(
        !out.contains("'totalCount': 0"),
        "no calls in the § 3.0 window: {out}"
    );
    let out = run_until("node", &localized(&sim, "historic_connect.mjs"), "").await;
    assert!(
        out.contains("totalCount") && !out.contains("totalCount: 0"),
        "no calls in the § 3.0 window: {out}"
    );

    let out = run_until("python3", &localized(&sim, "historic_calls.py"), "idCall").await;
    assert!(out.contains("'hasNextPage': True"), "{out}");
    let out = run_until("node", &localized(&sim, "historic_calls.mjs"), "").await;
    assert!(
        out.contains("idCall") && out.contains("hasNextPage: true"),
        "{out}"
    );
    sim.shutdown().await;
}
