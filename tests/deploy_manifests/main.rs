//! The deployment files, checked with the tools made for them and against the
//! relay's own code:
//!
//! - the kustomizations as `kustomize build` renders them, validated by
//!   `kubeconform` (strict) against the Kubernetes schemas and the Prometheus
//!   Operator's CRDs, then cross-checked (selectors, ports, volumes, probes,
//!   security context, grace period, NetworkPolicy);
//! - docker-compose.yml as `docker compose config` resolves it;
//! - the alert rules through `promtool check rules`;
//! - every metric and label the alerts, the dashboard and the operations guide
//!   name against the real [`Metrics`] registry, every configuration file and
//!   `STUDIO_RELAY__*` variable through the real configuration loader, every
//!   command line through the real command-line parser, and every probed HTTP
//!   path against the real ops listener.
//!
//! `bash scripts/install-deps` puts the tools in the tools cache; a missing
//! tool fails the test and says so.
//!
//! [`Metrics`]: studio_relay::ops::Metrics

use studio_relay_testkit as support;

mod cli;
mod compose;
mod config;
mod dockerfile;
mod docs;
mod kubernetes;
mod metrics;
mod probes;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

/// The kustomizations the project ships.
pub const KUSTOMIZATIONS: [&str; 2] = ["deploy/kubernetes/base", "deploy/kubernetes/jobs"];

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A file of the repository, by its path from the root.
pub fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// Every document of a YAML stream, as JSON values.
pub fn yaml_documents(text: &str, what: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{what}: invalid YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// Problems found by one test, reported together so that one run shows them all.
#[derive(Default)]
pub struct Problems(Vec<String>);

impl Problems {
    pub fn push(&mut self, problem: String) {
        self.0.push(problem);
    }

    /// Records `problem` unless `ok`.
    pub fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.0.push(problem());
        }
    }

    pub fn assert_none(self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{} problem(s) in {what}:\n  - {}",
            self.0.len(),
            self.0.join("\n  - ")
        );
    }
}

/// A tool that `scripts/install-deps` puts in the tools cache.
pub fn tool(name: &str) -> PathBuf {
    let path = support::tools_dir().join("bin").join(name);
    assert!(
        path.is_file(),
        "{name} not found at {}: run `bash scripts/install-deps`",
        path.display()
    );
    path
}

/// Runs a tool from the repository root with a minimal environment (no
/// variable of the caller's shell leaks into interpolation) and returns its
/// standard output, or its exit status and standard error.
pub fn run_tool(name: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut child = Command::new(tool(name))
        .args(args)
        .current_dir(root())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("cannot write to {name}: {e}"));
    }
    let out = child.wait_with_output().expect("tool runs to its end");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        let output = stdout + &String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "{name} failed ({}):\n      {}",
            out.status,
            output.trim().replace('\n', "\n      ")
        ))
    }
}

/// One kustomization as `kustomize build` renders it.
pub struct Render {
    pub dir: &'static str,
    pub yaml: String,
    pub objects: Vec<Value>,
}

/// Every kustomization, rendered once per test run.
pub fn renders() -> &'static [Render] {
    static RENDERS: OnceLock<Vec<Render>> = OnceLock::new();
    RENDERS.get_or_init(|| {
        KUSTOMIZATIONS
            .iter()
            .map(|dir| {
                let yaml = run_tool("kustomize", &["build", dir], None)
                    .unwrap_or_else(|e| panic!("kustomize cannot render {dir}: {e}"));
                let objects = yaml_documents(&yaml, dir);
                Render { dir, yaml, objects }
            })
            .collect()
    })
}

/// Every object of every render.
pub fn all_objects() -> impl Iterator<Item = &'static Value> {
    renders().iter().flat_map(|r| r.objects.iter())
}

/// The objects of deploy/kubernetes that no kustomization applies (`*.example.yaml`).
pub fn example_objects() -> Vec<Value> {
    let mut out = Vec::new();
    for dir in KUSTOMIZATIONS {
        for entry in std::fs::read_dir(root().join(dir)).expect("kustomization directory") {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".example.yaml") {
                let rel = format!("{dir}/{name}");
                out.extend(yaml_documents(&read(&rel), &rel));
            }
        }
    }
    out
}

pub fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or_default()
}

pub fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or_default()
}

/// `Kind/name`, for messages.
pub fn id(o: &Value) -> String {
    format!("{}/{}", kind(o), name(o))
}

/// The objects of one kind.
pub fn of_kind<'a>(objects: &'a [Value], k: &'a str) -> impl Iterator<Item = &'a Value> {
    objects.iter().filter(move |o| kind(o) == k)
}

/// The pod template of a workload (Deployment, Job, CronJob, ...), if it is one.
pub fn pod_template(o: &Value) -> Option<&Value> {
    let template = match kind(o) {
        "CronJob" => o.pointer("/spec/jobTemplate/spec/template"),
        _ => o.pointer("/spec/template"),
    };
    template.filter(|t| t.pointer("/spec/containers").is_some())
}

/// Init containers and containers of a pod spec.
pub fn containers(pod_spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers"]
        .into_iter()
        .flat_map(move |key| pod_spec[key].as_array().into_iter().flatten())
}

/// An array field as a slice (empty when absent).
pub fn items<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Whether `selector` (a Service's label map, or a LabelSelector with
/// `matchLabels` / `matchExpressions`) selects `labels`. An empty selector
/// selects nothing here: every selector of the project names its pods.
pub fn selects(selector: &Value, labels: &Value) -> bool {
    let is_label_selector =
        selector.get("matchLabels").is_some() || selector.get("matchExpressions").is_some();
    let (wanted, expressions) = if is_label_selector {
        (
            &selector["matchLabels"],
            items(selector, "/matchExpressions"),
        )
    } else {
        (selector, &[][..])
    };
    let wanted = wanted.as_object().cloned().unwrap_or_default();
    (!wanted.is_empty() || !expressions.is_empty())
        && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
        && expressions.iter().all(|e| expression_holds(e, labels))
}

fn expression_holds(e: &Value, labels: &Value) -> bool {
    let value = labels.get(e["key"].as_str().unwrap_or_default());
    let listed = || value.is_some_and(|v| items(e, "/values").contains(v));
    match e["operator"].as_str() {
        Some("In") => listed(),
        Some("NotIn") => !listed(),
        Some("Exists") => value.is_some(),
        Some("DoesNotExist") => value.is_none(),
        _ => false,
    }
}
