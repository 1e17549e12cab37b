//! Every configuration the deployments give the relay (the mounted TOML
//! files, the `STUDIO_RELAY__*` variables of the manifests, docker-compose.yml
//! and the image) goes through the relay's own loader, as the container would
//! load it: an unknown key, a value of the wrong type or an invalid setting
//! fails the way `studio-relay check-config` would.

use serde_json::Value;
use studio_relay::cli::Command;
use studio_relay::config::{load_from_str, Config, ConfigError, SinkKind};

use crate::dockerfile::Dockerfile;
use crate::kubernetes::{env_of, mounted_file};
use crate::{cli, compose, containers, id, pod_template, renders, Problems, Render};

/// Loads `toml` with `env` on top. Token files read as a placeholder (that they
/// are mounted is checked with the workloads).
pub fn load(toml: &str, origin: &str, env: &[(String, String)]) -> Result<Config, ConfigError> {
    load_from_str(toml, origin, env.iter().cloned(), |_| {
        Ok("placeholder-token".into())
    })
}

/// The variables a container of the image sees: the image's ENV, then its own.
pub fn container_env(image: &Dockerfile, own: Vec<(String, String)>) -> Vec<(String, String)> {
    image.env().into_iter().chain(own).collect()
}

/// A relay container of a rendered workload, with the configuration it loads.
pub struct RelayContainer {
    pub place: String,
    pub workload: &'static Value,
    pub container: &'static Value,
    pub config: Result<Config, String>,
}

/// Every container of the renders that runs a subcommand reading the configuration.
pub fn relay_containers(render: &'static Render, image: &Dockerfile) -> Vec<RelayContainer> {
    let mut out = Vec::new();
    for workload in &render.objects {
        let Some(template) = pod_template(workload) else {
            continue;
        };
        for c in containers(&template["spec"]) {
            let args =
                cli::container_args(cli::strings(&c["command"]), cli::strings(&c["args"]), image);
            let Some(Ok(parsed)) = args.ok().flatten().map(|a| cli::parse(&a)) else {
                continue;
            };
            if !cli::loads_config(&parsed) {
                continue;
            }
            let place = format!("{} {} container {}", render.dir, id(workload), c["name"]);
            let config = load_container(render, &template["spec"], c, image);
            out.push(RelayContainer {
                place,
                workload,
                container: c,
                config,
            });
        }
    }
    out
}

fn load_container(
    render: &Render,
    pod_spec: &Value,
    c: &Value,
    image: &Dockerfile,
) -> Result<Config, String> {
    let env = container_env(image, env_of(c));
    let file = env
        .iter()
        .rev()
        .find(|(k, _)| k == "STUDIO_RELAY_CONFIG")
        .map(|(_, v)| v.clone());
    let toml = match &file {
        None => String::new(),
        Some(path) => {
            let (volume, key) = mounted_file(pod_spec, c, path, "configMap").ok_or_else(|| {
                format!("STUDIO_RELAY_CONFIG={path} is not a file of a mounted ConfigMap")
            })?;
            let map = volume["configMap"]["name"].as_str().unwrap_or_default();
            let data = render
                .objects
                .iter()
                .find(|o| crate::kind(o) == "ConfigMap" && crate::name(o) == map)
                .and_then(|cm| cm["data"][&key].as_str())
                .ok_or_else(|| format!("ConfigMap {map} of the render has no key {key}"))?;
            data.to_string()
        }
    };
    load(&toml, file.as_deref().unwrap_or("<defaults>"), &env).map_err(|e| e.to_string())
}

/// Where the relay connects: `(config key, host, port)`.
pub fn endpoints(config: &Config) -> Vec<(String, String, u16)> {
    let mut out = Vec::new();
    let mut add = |key: &str, raw: &str, default_port: Option<u16>| {
        let with_scheme = if raw.contains("://") {
            raw.to_string()
        } else {
            format!("tcp://{raw}")
        };
        if let Ok(url) = url::Url::parse(&with_scheme) {
            let port = url
                .port_or_known_default()
                .or(default_port)
                .unwrap_or_default();
            out.push((
                key.to_string(),
                url.host_str().unwrap_or_default().to_string(),
                port,
            ));
        }
    };
    add("upstream.live_url", &config.upstream.live_url, None);
    add("upstream.graphql_url", &config.upstream.graphql_url, None);
    if let Some(registry) = &config.encoding.schema_registry {
        add("encoding.schema_registry.url", &registry.url, None);
    }
    match config.sink.kind {
        SinkKind::Kafka => config
            .sink
            .kafka
            .brokers
            .split(',')
            .for_each(|b| add("sink.kafka.brokers", b.trim(), Some(9092))),
        SinkKind::Nats => config
            .sink
            .nats
            .url
            .split(',')
            .for_each(|u| add("sink.nats.url", u.trim(), Some(4222))),
        SinkKind::Stdout => {}
    }
    out
}

#[test]
fn every_deployed_configuration_loads_with_the_real_loader() {
    let image = Dockerfile::load();
    // `docker run` with nothing but a token, as the Dockerfile's example.
    let token = vec![("TELAVOX_TOKEN".into(), "placeholder-token".into())];
    let mut loads = vec![(
        "Dockerfile",
        "ENV".to_string(),
        load("", "<defaults>", &container_env(&image, token)).map_err(|e| e.to_string()),
    )];
    for render in renders() {
        for relay in relay_containers(render, &image) {
            loads.push(("deploy/kubernetes", relay.place, relay.config));
        }
    }
    for (name, service) in compose::relay_services() {
        let config = load("", "<defaults>", &compose::env(service)).map_err(|e| e.to_string());
        loads.push(("docker-compose.yml", format!("service {name}"), config));
    }
    let mut problems = Problems::default();
    let mut loaded = std::collections::BTreeSet::new();
    for (source, place, config) in loads {
        match config {
            Ok(_) => {
                loaded.insert(source);
            }
            Err(e) => problems.push(format!("{source} {place}: {e}")),
        }
    }
    for source in ["Dockerfile", "deploy/kubernetes", "docker-compose.yml"] {
        problems.check(loaded.contains(source), || {
            format!("{source}: no relay configuration loaded")
        });
    }
    problems.assert_none("deployed configurations");
}

/// Replay publishes what the live relay would have: the jobs' configuration
/// must match the base's in everything that decides topics, schemas and ids.
#[test]
fn replay_jobs_publish_like_the_live_relay() {
    let image = Dockerfile::load();
    let mut problems = Problems::default();
    let effective = |dir: &str| -> Vec<(String, toml::Table)> {
        let render = renders().iter().find(|r| r.dir == dir).expect("a render");
        relay_containers(render, &image)
            .into_iter()
            .filter_map(|r| Some((r.place, r.config.ok()?.redacted_toml().parse().ok()?)))
            .collect()
    };
    let base = effective("deploy/kubernetes/base");
    let jobs = effective("deploy/kubernetes/jobs");
    let Some((live_place, live)) = base.first() else {
        panic!("no relay container in deploy/kubernetes/base loads its configuration");
    };
    for (place, replay) in &jobs {
        for section in ["upstream", "tenants", "encoding", "sink"] {
            problems.check(replay.get(section) == live.get(section), || {
                format!("{place}: [{section}] differs from {live_place}: replayed events would not match live ones")
            });
        }
    }
    problems.check(!jobs.is_empty(), || {
        "no replay container loads its configuration".into()
    });
    problems.assert_none("replay configuration");
}

/// Kubernetes waits terminationGracePeriodSeconds after SIGTERM before it
/// kills: the relay's drain deadline must fit inside it, and with `ha.enabled`
/// the handover of its tenants (`ha.handoff_timeout`) on top.
#[test]
fn termination_grace_period_exceeds_the_shutdown_deadline() {
    let image = Dockerfile::load();
    let mut problems = Problems::default();
    for render in renders() {
        for relay in relay_containers(render, &image) {
            let Ok(config) = &relay.config else { continue };
            let template = pod_template(relay.workload).expect("a workload");
            let grace = template["spec"]["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap_or(30);
            let deadline = config.relay.shutdown_deadline;
            // `replay` ignores [ha]: only the live relay hands tenants over.
            let live = cli::container_args(
                cli::strings(&relay.container["command"]),
                cli::strings(&relay.container["args"]),
                &image,
            )
            .ok()
            .flatten()
            .and_then(|args| cli::parse(&args).ok())
            .is_some_and(|parsed| matches!(parsed.command, Command::Run));
            let handoff = if live && config.ha.enabled {
                config.ha.handoff_timeout
            } else {
                std::time::Duration::ZERO
            };
            problems.check(std::time::Duration::from_secs(grace) > deadline + handoff, || {
                if handoff.is_zero() {
                    format!("{}: terminationGracePeriodSeconds {grace} must exceed relay.shutdown_deadline {deadline:?}", relay.place)
                } else {
                    format!("{}: terminationGracePeriodSeconds {grace} must exceed relay.shutdown_deadline {deadline:?} + ha.handoff_timeout {handoff:?}", relay.place)
                }
            });
        }
    }
    problems.assert_none("grace periods");
}
