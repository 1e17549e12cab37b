//! `studio-relay` as a child process, for tests of the real binary: logs
//! captured in files, the ops endpoints on a port the relay picks, signals.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `studio-relay` binary of this build. Cargo (1.94 and newer) names it
/// in `CARGO_BIN_EXE_studio-relay` when it runs a test or benchmark of the
/// studio-relay package; older versions put it next to the `deps/`
/// directory the test executable runs from.
pub fn relay_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CARGO_BIN_EXE_studio-relay") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let binary = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join(format!("studio-relay{}", std::env::consts::EXE_SUFFIX)))
        .filter(|p| p.is_file());
    binary.unwrap_or_else(|| {
        panic!(
            "the studio-relay binary is not next to {}: run this through cargo test or cargo bench",
            exe.display()
        )
    })
}

/// A `studio-relay` child process with stdout/stderr captured in files.
pub struct Relay {
    child: Child,
    dir: tempfile::TempDir,
    /// Where the ops endpoints listen, once the relay has logged it.
    ops_addr: OnceLock<SocketAddr>,
}

impl Relay {
    /// Starts `studio-relay ARGS` with `env` on top of a clean environment.
    /// Its ops endpoints listen on a port it picks (`127.0.0.1:0`), read
    /// back from its log.
    pub fn spawn(args: &[&str], env: &[(&str, String)]) -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(relay_binary());
        // The relay's settings, and the proxy variables (the live sockets
        // and the GraphQL client honour them), come from `env` only.
        for (k, _) in std::env::vars() {
            let proxy = k.to_ascii_uppercase().ends_with("_PROXY");
            if k.starts_with("STUDIO_RELAY") || k == "TELAVOX_TOKEN" || proxy {
                cmd.env_remove(k);
            }
        }
        cmd.args(["--log-format", "json", "--log-level", "info"])
            .args(args)
            .env("STUDIO_RELAY__OPS__LISTEN", "127.0.0.1:0")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap());
        let child = cmd.spawn().expect("start studio-relay");
        Relay {
            child,
            dir,
            ops_addr: OnceLock::new(),
        }
    }

    /// The ops listener's address, from the relay's "ops endpoints
    /// listening" log line; `None` until it has bound it.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        if let Some(addr) = self.ops_addr.get() {
            return Some(*addr);
        }
        let logged = self
            .log_lines("ops endpoints listening")
            .iter()
            .find_map(|line| line.get("addr")?.as_str()?.parse().ok())?;
        Some(*self.ops_addr.get_or_init(|| logged))
    }

    /// The process id (for /proc readings).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// `GET path` from the ops endpoints; `None` while they do not answer.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let resp = reqwest::get(format!("http://{}{path}", self.ops_addr()?))
            .await
            .ok()?;
        Some((resp.status().as_u16(), resp.text().await.ok()?))
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.map(|r| r.1).unwrap_or_default()
    }

    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// SIGKILL: no drain, no goodbye (a crash, an OOM kill).
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the exit; fails the test after `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "studio-relay did not exit within {timeout:?}; stderr:\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything the process wrote (stdout then stderr).
    pub fn output(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap();
        format!("{}{}", read("stdout"), read("stderr"))
    }

    /// The JSON log lines whose message contains `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<serde_json::Value> {
        self.output()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .is_some_and(|m| m.contains(needle))
            })
            .collect()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls the relay's `/metrics` until `check` holds; fails after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, relay: &Relay, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let text = relay.metrics().await;
        if check(&text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; output:\n{}",
            relay.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
