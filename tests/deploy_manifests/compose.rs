//! docker-compose.yml as `docker compose config` resolves it (the Compose
//! specification's schema, interpolation, anchors and references), then the
//! consistency Compose only finds out at `up`: health-gated dependencies,
//! bind sources, published ports, and the relays pointing at the services and
//! token of this stack.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::Value;
use studio_relay::cli::Command;

use crate::dockerfile::Dockerfile;
use crate::{cli, config, root, run_tool, Problems};

const COMPOSE: &str = "docker-compose.yml";

/// The resolved Compose model, with the defaults of every `${VAR:-default}`
/// (the tool runs with an empty environment).
pub fn resolved() -> &'static Value {
    static RESOLVED: OnceLock<Value> = OnceLock::new();
    RESOLVED.get_or_init(|| {
        let json = run_tool(
            "docker-compose",
            &["--file", COMPOSE, "config", "--format", "json"],
            None,
        )
        .unwrap_or_else(|e| panic!("docker compose rejects {COMPOSE}: {e}"));
        serde_json::from_str(&json).expect("docker compose config prints JSON")
    })
}

pub fn services() -> impl Iterator<Item = (&'static str, &'static Value)> {
    resolved()["services"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v))
}

/// The services that run the image built from ./Dockerfile.
pub fn own_image_services() -> Vec<(&'static str, &'static Value)> {
    let own_images: Vec<&Value> = services()
        .filter(|(_, s)| builds_own_image(s))
        .map(|(_, s)| &s["image"])
        .collect();
    services()
        .filter(|(_, s)| builds_own_image(s) || own_images.contains(&&s["image"]))
        .collect()
}

/// The services that run a subcommand reading the relay configuration.
pub fn relay_services() -> Vec<(&'static str, &'static Value)> {
    let image = Dockerfile::load();
    own_image_services()
        .into_iter()
        .filter(|(_, s)| {
            cli::container_args(
                cli::strings(&s["entrypoint"]),
                cli::strings(&s["command"]),
                &image,
            )
            .ok()
            .flatten()
            .and_then(|args| cli::parse(&args).ok())
            .is_some_and(|c| cli::loads_config(&c))
        })
        .collect()
}

fn builds_own_image(service: &Value) -> bool {
    let build = &service["build"];
    let dockerfile = build["context"].as_str().map(|ctx| {
        std::path::Path::new(ctx).join(build["dockerfile"].as_str().unwrap_or("Dockerfile"))
    });
    dockerfile.is_some_and(|d| d == root().join("Dockerfile"))
}

/// A service's environment (variables without a value left out).
pub fn env(service: &Value) -> Vec<(String, String)> {
    service["environment"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
        .collect()
}

/// A Compose duration (`30s`, `1m30s`).
pub fn duration(v: &Value) -> Option<std::time::Duration> {
    v.as_str().and_then(|s| humantime::parse_duration(s).ok())
}

#[test]
fn compose_services_depend_on_health_checks_and_declared_sources() {
    let mut problems = Problems::default();
    let all: BTreeMap<&str, &Value> = services().collect();
    let mut published = BTreeMap::new();
    for (name, s) in &all {
        let place = format!("{COMPOSE} service {name}");
        if let Some(ctx) = s["build"]["context"].as_str() {
            let dockerfile = s["build"]["dockerfile"].as_str().unwrap_or("Dockerfile");
            problems.check(std::path::Path::new(ctx).join(dockerfile).is_file(), || {
                format!("{place}: build file {ctx}/{dockerfile} does not exist")
            });
        }
        for (dep, spec) in s["depends_on"].as_object().into_iter().flatten() {
            let target = all.get(dep.as_str()).copied().unwrap_or(&Value::Null);
            match spec["condition"].as_str() {
                Some("service_healthy") => problems.check(has_healthcheck(target), || {
                    format!("{place}: waits for {dep} to be healthy, but {dep} has no healthcheck")
                }),
                Some("service_completed_successfully") => {
                    let restart = target["restart"].as_str().unwrap_or("no");
                    problems.check(restart == "no", || {
                        format!(
                            "{place}: waits for {dep} to complete, but {dep} restarts ({restart})"
                        )
                    });
                }
                _ => {}
            }
        }
        for v in s["volumes"].as_array().into_iter().flatten() {
            let source = v["source"].as_str().unwrap_or_default();
            problems.check(
                v["type"] != "bind" || std::path::Path::new(source).exists(),
                || format!("{place}: bind source {source} does not exist"),
            );
        }
        for p in s["ports"].as_array().into_iter().flatten() {
            let Some(host) = p["published"].as_str() else {
                continue;
            };
            if let Some(other) = published.insert(host.to_string(), *name) {
                problems.push(format!(
                    "{place}: host port {host} is also published by {other}"
                ));
            }
        }
    }
    problems.assert_none(COMPOSE);
}

fn has_healthcheck(service: &Value) -> bool {
    let hc = &service["healthcheck"];
    hc["disable"] != true
        && hc["test"]
            .as_array()
            .is_some_and(|t| !t.is_empty() && t[0] != "NONE")
}

/// The relays of the stack talk to the stack: every host their URLs name is a
/// service, the simulator they read listens beyond loopback and accepts their
/// token, and their ops listener is where the health check and published port
/// look.
#[test]
fn compose_relays_reach_the_simulator_brokers_and_their_health_check() {
    let mut problems = Problems::default();
    let hosts: Vec<&str> = services()
        .flat_map(|(name, s)| [Some(name), s["hostname"].as_str()])
        .flatten()
        .collect();
    let simulators = simulators(&mut problems);
    let mut relays = 0;
    for (name, s) in relay_services() {
        relays += 1;
        let place = format!("{COMPOSE} service {name}");
        // A configuration that does not load fails the configuration test.
        let Ok(config) = config::load("", &place, &env(s)) else {
            continue;
        };
        // A dotless host is one of the stack's own.
        for (key, host, _) in config::endpoints(&config) {
            problems.check(host.contains('.') || hosts.contains(&host.as_str()), || {
                format!("{place}: {key} names host {host}, which is not a service of {COMPOSE}")
            });
        }
        if let Ok(live) = url::Url::parse(&config.upstream.live_url) {
            let host = live.host_str().unwrap_or_default();
            if let Some(accepted) = simulators.get(host) {
                let token = config.tenants[0].token.expose().to_string();
                problems.check(accepted.contains(&token), || {
                    format!("{place}: sends the token {token:?}, which simulator {host} does not accept ({accepted:?})")
                });
            }
        }
        check_ops_listener(&place, s, &config, &mut problems);
    }
    problems.check(relays > 0, || {
        format!("no relay service found in {COMPOSE}")
    });
    problems.assert_none(COMPOSE);
}

/// Simulator services by name and hostname, with the tokens they accept.
fn simulators(problems: &mut Problems) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for (name, s) in own_image_services() {
        let Some(args) = cli::strings(&s["command"]) else {
            continue;
        };
        let Ok(parsed) = cli::parse(&args) else {
            continue;
        };
        let Command::Simulate(sim) = parsed.command else {
            continue;
        };
        problems.check(sim.listen.ip().is_unspecified(), || {
            format!("{COMPOSE} service {name}: the simulator listens on {}, which other containers cannot reach", sim.listen)
        });
        // The parser sees the command line only; the container's
        // STUDIO_SIM_TOKEN applies where --token is not given.
        let from_env = env(s)
            .into_iter()
            .find(|(k, _)| k == "STUDIO_SIM_TOKEN")
            .map(|(_, v)| v);
        let tokens: Vec<String> = match from_env {
            Some(v) if !args.iter().any(|a| a.starts_with("--token")) => {
                v.split(',').map(|t| t.trim().to_string()).collect()
            }
            _ => sim.tokens.iter().map(|t| t.expose().to_string()).collect(),
        };
        for host in [Some(name), s["hostname"].as_str()].into_iter().flatten() {
            out.insert(host.to_string(), tokens.clone());
        }
    }
    out
}

fn check_ops_listener(
    place: &str,
    s: &Value,
    config: &studio_relay::config::Config,
    problems: &mut Problems,
) {
    let listen: std::net::SocketAddr = match config.ops.listen.parse() {
        Ok(a) => a,
        Err(_) => {
            return problems.push(format!(
                "{place}: ops.listen {:?} is not an address",
                config.ops.listen
            ))
        }
    };
    if has_healthcheck(s) {
        let test = cli::strings(&s["healthcheck"]["test"])
            .unwrap_or_default()
            .join(" ");
        problems.check(test.contains(&format!(":{}/", listen.port())), || {
            format!(
                "{place}: the healthcheck `{test}` does not probe the ops port {}",
                listen.port()
            )
        });
    }
    let grace = duration(&s["stop_grace_period"]).unwrap_or(std::time::Duration::from_secs(10));
    problems.check(grace > config.relay.shutdown_deadline, || {
        format!(
            "{place}: stop_grace_period {grace:?} must exceed relay.shutdown_deadline {:?}, or the drain is killed",
            config.relay.shutdown_deadline
        )
    });
    let published = s["ports"].as_array().into_iter().flatten();
    for p in published {
        let target = p["target"].as_u64().unwrap_or_default();
        problems.check(
            target == u64::from(listen.port()) && !listen.ip().is_loopback(),
            || {
                format!(
                    "{place}: publishes container port {target}, but the ops listener is {listen}"
                )
            },
        );
    }
}
