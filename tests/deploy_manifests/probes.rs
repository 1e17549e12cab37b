//! Every HTTP path the deployments probe or scrape is one the relay's own ops
//! listener serves.

use std::sync::Arc;

use studio_relay::ops::{Health, Metrics};
use tokio_util::sync::CancellationToken;

use crate::dockerfile::Dockerfile;
use crate::{cli, compose, containers, id, items, kind, pod_template, renders, Problems};

/// `(where, path)` of every probe, ServiceMonitor endpoint and health check
/// aimed at the relay's ops listener.
fn probed_paths() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for render in renders() {
        for o in &render.objects {
            if let Some(template) = pod_template(o) {
                for c in containers(&template["spec"]) {
                    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                        if let Some(path) = c[probe]["httpGet"]["path"].as_str() {
                            out.push((
                                format!("{} {} {probe}", render.dir, id(o)),
                                path.to_string(),
                            ));
                        }
                    }
                }
            }
            if kind(o) == "ServiceMonitor" {
                for e in items(o, "/spec/endpoints") {
                    let path = e["path"].as_str().unwrap_or("/metrics").to_string();
                    out.push((format!("{} {} endpoint", render.dir, id(o)), path));
                }
            }
        }
    }
    if let Some(healthcheck) = Dockerfile::load().last("HEALTHCHECK") {
        out.extend(url_path(healthcheck).map(|p| ("Dockerfile HEALTHCHECK".to_string(), p)));
    }
    for (name, s) in compose::relay_services() {
        let test = cli::strings(&s["healthcheck"]["test"])
            .unwrap_or_default()
            .join(" ");
        out.extend(
            url_path(&test).map(|p| (format!("docker-compose.yml service {name} healthcheck"), p)),
        );
    }
    out
}

/// The path of the first http:// URL of a command line.
fn url_path(command: &str) -> Option<String> {
    let word = command
        .split_whitespace()
        .find(|w| w.starts_with("http://"))?;
    Some(url::Url::parse(word).ok()?.path().to_string())
}

#[tokio::test]
async fn probed_paths_are_served_by_the_ops_listener() {
    let paths = probed_paths();
    let shutdown = CancellationToken::new();
    let addr = studio_relay::ops::server::spawn(
        "127.0.0.1:0",
        Arc::new(Metrics::new()),
        Arc::new(Health::new()),
        shutdown.clone(),
    )
    .await
    .expect("the ops listener binds a loopback port");
    let client = reqwest::Client::new();
    let mut problems = Problems::default();
    problems.check(paths.len() > 1, || "no probed path found".into());
    for (place, path) in paths {
        let response = client.get(format!("http://{addr}{path}")).send().await;
        let status = response.expect("the ops listener answers").status();
        problems.check(status != reqwest::StatusCode::NOT_FOUND, || {
            format!("{place}: the ops listener does not serve {path} (404)")
        });
    }
    shutdown.cancel();
    problems.assert_none("probed paths");
}
