//! The kustomizations as `kustomize build` renders them: valid Kubernetes
//! objects (kubeconform, strict), and consistent with each other and with the
//! relay's configuration.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use studio_relay::config::Config;

use crate::config::{endpoints, relay_containers, RelayContainer};
use crate::dockerfile::Dockerfile;
use crate::{
    all_objects, containers, example_objects, id, items, kind, name, of_kind, pod_template, read,
    renders, run_tool, selects, support, Problems, KUSTOMIZATIONS,
};

/// The Kubernetes release whose schemas the objects are validated against:
/// the oldest the deployment supports (docs/operations.md).
const KUBERNETES_VERSION: &str = "1.30.0";

/// The Prometheus Operator CRDs (ServiceMonitor, PrometheusRule) that
/// scripts/install-deps takes from the operator's Go module.
const OPERATOR_CRDS: [&str; 2] = ["servicemonitors-crd.json", "prometheusrules-crd.json"];

/// A PrometheusRule applied on its own (docs/operations.md).
const ALERT_RULES: &str = "deploy/prometheus/alerts.yaml";

/// A container's literal environment (variables from `valueFrom` left out).
pub fn env_of(container: &Value) -> Vec<(String, String)> {
    items(container, "/env")
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// The volume (of `volume_kind`: `configMap` or `secret`) and the key behind a
/// file path of a container, if a mount provides it.
pub fn mounted_file<'a>(
    pod_spec: &'a Value,
    container: &Value,
    path: &str,
    volume_kind: &str,
) -> Option<(&'a Value, String)> {
    let mount = items(container, "/volumeMounts").iter().find(|m| {
        let dir = m["mountPath"]
            .as_str()
            .unwrap_or_default()
            .trim_end_matches('/');
        path.strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
    })?;
    let dir = mount["mountPath"].as_str()?.trim_end_matches('/');
    let file = mount["subPath"].as_str().unwrap_or(&path[dir.len() + 1..]);
    let volume = items(pod_spec, "/volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])?;
    let source = volume.get(volume_kind)?;
    let key = match source.get("items") {
        Some(listed) => listed.as_array()?.iter().find(|i| i["path"] == file)?["key"].as_str()?,
        None => file,
    };
    Some((volume, key.to_string()))
}

/// Strict JSON schemas of the operator's CRDs, where kubeconform looks for
/// them (`{kind}-{group prefix}-{version}.json`): unknown fields are errors,
/// as for the built-in kinds.
fn crd_schemas() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    let source = support::tools_dir().join("prometheus-operator-crds");
    for file in OPERATOR_CRDS {
        let path = source.join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}: run `bash scripts/install-deps`", path.display()));
        let crd: Value = serde_json::from_str(&text).expect("a CRD in JSON");
        let group_prefix = crd["spec"]["group"]
            .as_str()
            .unwrap()
            .split('.')
            .next()
            .unwrap();
        let kind = crd["spec"]["names"]["kind"]
            .as_str()
            .unwrap()
            .to_lowercase();
        for version in items(&crd, "/spec/versions") {
            let mut schema = version["schema"]["openAPIV3Schema"].clone();
            forbid_unknown_fields(&mut schema);
            let file = format!(
                "{kind}-{group_prefix}-{}.json",
                version["name"].as_str().unwrap()
            );
            std::fs::write(dir.path().join(file), schema.to_string()).expect("schema written");
        }
    }
    dir
}

/// What kubeconform's `-strict` does to the built-in schemas: an object that
/// lists its properties takes no others.
fn forbid_unknown_fields(schema: &mut Value) {
    if let Some(map) = schema.as_object_mut() {
        let closed = map.contains_key("properties")
            && !map.contains_key("additionalProperties")
            && map.get("x-kubernetes-preserve-unknown-fields") != Some(&json!(true));
        if closed {
            map.insert("additionalProperties".into(), json!(false));
        }
        map.values_mut().for_each(forbid_unknown_fields);
    } else if let Some(list) = schema.as_array_mut() {
        list.iter_mut().for_each(forbid_unknown_fields);
    }
}

fn kubernetes_schemas() -> PathBuf {
    let dir = support::tools_dir()
        .join("kubernetes-json-schema")
        .join(format!("v{KUBERNETES_VERSION}-local-strict"));
    assert!(
        dir.is_dir(),
        "Kubernetes {KUBERNETES_VERSION} schemas not found at {}: run `bash scripts/install-deps`",
        dir.display()
    );
    dir
}

fn kubeconform(yaml: &str, crds: &Path) -> Result<String, String> {
    let builtin = kubernetes_schemas().join("{{.ResourceKind}}{{.KindSuffix}}.json");
    let custom = crds.join("{{.ResourceKind}}{{.KindSuffix}}.json");
    let args = [
        "-strict",
        "-summary",
        "-kubernetes-version",
        KUBERNETES_VERSION,
        "-schema-location",
        builtin.to_str().unwrap(),
        "-schema-location",
        custom.to_str().unwrap(),
        "-",
    ];
    run_tool("kubeconform", &args, Some(yaml))
}

#[test]
fn rendered_objects_are_valid_kubernetes_objects() {
    let crds = crd_schemas();
    let mut problems = Problems::default();
    let examples: Vec<String> = example_objects()
        .iter()
        .map(|o| serde_json::to_string(o).unwrap())
        .collect();
    let streams = renders()
        .iter()
        .map(|r| (r.dir.to_string(), r.yaml.clone()))
        .chain([
            ("*.example.yaml".to_string(), examples.join("\n---\n")),
            (ALERT_RULES.to_string(), read(ALERT_RULES)),
        ]);
    for (what, yaml) in streams {
        if let Err(e) = kubeconform(&yaml, crds.path()) {
            problems.push(format!("{what}: {e}"));
        }
    }
    problems.assert_none("Kubernetes objects (kubeconform, strict)");
}

/// A manifest that no kustomization lists is never applied; examples say so
/// in their name.
#[test]
fn every_manifest_is_applied_or_named_an_example() {
    let mut problems = Problems::default();
    for dir in KUSTOMIZATIONS {
        let kustomization: Value =
            crate::yaml_documents(&read(&format!("{dir}/kustomization.yaml")), dir)
                .pop()
                .expect("a kustomization");
        let listed = items(&kustomization, "/resources");
        for entry in std::fs::read_dir(crate::root().join(dir)).expect("a directory") {
            let file = entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            let applied = listed.iter().any(|r| r == file.as_str());
            let manifest = file.ends_with(".yaml") && file != "kustomization.yaml";
            problems.check(!manifest || applied || file.ends_with(".example.yaml"), || {
                format!("{dir}/{file} is in no kustomization's resources (name it *.example.yaml if it is an example)")
            });
        }
    }
    problems.assert_none("manifest files");
}

/// Every ServiceAccount, ConfigMap, Secret, PersistentVolumeClaim and volume a
/// pod names exists, every volume is mounted, and every token file comes from
/// a Secret only its owner can read.
#[test]
fn workloads_use_only_what_exists() {
    let secrets: Vec<String> = all_objects()
        .cloned()
        .chain(example_objects())
        .filter(|o| kind(o) == "Secret")
        .map(|o| name(&o).to_string())
        .collect();
    let mut problems = Problems::default();
    for render in renders() {
        for w in render.objects.iter() {
            let Some(template) = pod_template(w) else {
                continue;
            };
            let place = format!("{} {}", render.dir, id(w));
            check_service_account(&place, &template["spec"], &mut problems);
            check_volumes(
                &place,
                &template["spec"],
                &render.objects,
                &secrets,
                &mut problems,
            );
            for c in containers(&template["spec"]) {
                check_token_files(
                    &format!("{place} container {}", c["name"]),
                    &template["spec"],
                    c,
                    &mut problems,
                );
            }
        }
    }
    problems.assert_none("workload references");
}

fn check_service_account(place: &str, pod: &Value, problems: &mut Problems) {
    let sa = pod["serviceAccountName"].as_str().unwrap_or("default");
    let defined: Vec<&Value> = all_objects()
        .filter(|o| kind(o) == "ServiceAccount" && name(o) == sa)
        .collect();
    problems.check(sa == "default" || !defined.is_empty(), || {
        format!("{place}: serviceAccountName {sa} is defined by no kustomization")
    });
    // The pod's setting wins over its ServiceAccount's.
    let no_token = match pod.get("automountServiceAccountToken") {
        Some(setting) => setting == false,
        None => defined
            .iter()
            .any(|o| o["automountServiceAccountToken"] == false),
    };
    problems.check(no_token, || {
        format!("{place}: automountServiceAccountToken must be false (the relay talks to no Kubernetes API)")
    });
}

fn check_volumes(
    place: &str,
    pod: &Value,
    objects: &[Value],
    secrets: &[String],
    problems: &mut Problems,
) {
    let exists = |k: &str, n: &str| of_kind(objects, k).any(|o| name(o) == n);
    for v in items(pod, "/volumes") {
        let volume = v["name"].as_str().unwrap_or_default();
        if let Some(map) = v["configMap"]["name"].as_str() {
            problems.check(exists("ConfigMap", map), || {
                format!("{place}: volume {volume}: ConfigMap {map} is not in the render")
            });
        }
        if let Some(secret) = v["secret"]["secretName"].as_str() {
            problems.check(secrets.iter().any(|s| s == secret), || {
                format!("{place}: volume {volume}: Secret {secret} is defined nowhere (not even as *.example.yaml)")
            });
        }
        if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
            problems.check(exists("PersistentVolumeClaim", claim), || {
                format!(
                    "{place}: volume {volume}: PersistentVolumeClaim {claim} is not in the render"
                )
            });
        }
        let mounted = containers(pod).any(|c| {
            items(c, "/volumeMounts")
                .iter()
                .any(|m| m["name"] == v["name"])
        });
        problems.check(mounted, || {
            format!("{place}: volume {volume} is not mounted")
        });
    }
    for c in containers(pod) {
        for m in items(c, "/volumeMounts") {
            let has_volume = items(pod, "/volumes")
                .iter()
                .any(|v| v["name"] == m["name"]);
            problems.check(has_volume, || {
                format!(
                    "{place} container {}: volumeMount {} has no volume",
                    c["name"], m["name"]
                )
            });
        }
    }
}

fn check_token_files(place: &str, pod: &Value, c: &Value, problems: &mut Problems) {
    for (var, path) in env_of(c)
        .into_iter()
        .filter(|(k, _)| k.ends_with("__TOKEN_FILE"))
    {
        match mounted_file(pod, c, &path, "secret") {
            None => problems.push(format!(
                "{place}: {var}={path} is not a file of a mounted Secret"
            )),
            Some((volume, _)) => {
                let mode = volume["secret"]["defaultMode"].as_u64().unwrap_or(0o644);
                problems.check(mode & 0o007 == 0, || {
                    format!(
                        "{place}: the token volume {} is world-readable (defaultMode {mode:#o})",
                        volume["name"]
                    )
                });
            }
        }
    }
}

/// Non-root, read-only, no privilege escalation, no capabilities, the
/// runtime's seccomp profile, and resource requests and a memory limit.
#[test]
fn containers_run_locked_down() {
    let mut problems = Problems::default();
    for render in renders() {
        for w in &render.objects {
            let Some(template) = pod_template(w) else {
                continue;
            };
            let pod = &template["spec"];
            for c in containers(pod) {
                let place = format!("{} {} container {}", render.dir, id(w), c["name"]);
                check_security_context(
                    &place,
                    &pod["securityContext"],
                    &c["securityContext"],
                    &mut problems,
                );
                let resources = &c["resources"];
                for (field, wanted) in [
                    ("requests", "cpu"),
                    ("requests", "memory"),
                    ("limits", "memory"),
                ] {
                    problems.check(resources[field].get(wanted).is_some(), || {
                        format!("{place}: resources.{field}.{wanted} missing")
                    });
                }
            }
        }
    }
    problems.assert_none("container security");
}

fn check_security_context(place: &str, pod: &Value, container: &Value, problems: &mut Problems) {
    // A container's setting wins over the pod's.
    let setting = |key: &str| {
        container
            .get(key)
            .or_else(|| pod.get(key))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let rules: [(bool, &str); 6] = [
        (setting("runAsNonRoot") == true, "runAsNonRoot must be true"),
        (
            setting("runAsUser").as_u64().is_some_and(|u| u != 0),
            "runAsUser must be set and non-zero",
        ),
        (
            container["allowPrivilegeEscalation"] == false,
            "allowPrivilegeEscalation must be false",
        ),
        (
            container["readOnlyRootFilesystem"] == true,
            "readOnlyRootFilesystem must be true",
        ),
        (
            items(container, "/capabilities/drop")
                .iter()
                .any(|c| c == "ALL"),
            "capabilities.drop must contain ALL",
        ),
        (
            setting("seccompProfile")["type"] == "RuntimeDefault",
            "seccompProfile.type must be RuntimeDefault",
        ),
    ];
    for (ok, rule) in rules {
        problems.check(ok, || format!("{place}: {rule}"));
    }
}

/// The live relay: highly available (several replicas sharing the tenants
/// through leases, rolled one pod at a time, spread over nodes and kept
/// available by a PodDisruptionBudget), probed on its ops listener, selected
/// by its Service and NetworkPolicy, and scraped through its ServiceMonitor.
#[test]
fn the_relay_deployment_is_a_probed_scraped_highly_available_set() {
    let image = Dockerfile::load();
    let mut problems = Problems::default();
    let mut deployments = 0;
    for render in renders() {
        for relay in relay_containers(render, &image) {
            if kind(relay.workload) != "Deployment" {
                continue;
            }
            deployments += 1;
            check_rollout(&relay, &mut problems);
            check_anti_affinity(&relay, &mut problems);
            check_disruption_budget(&relay, &render.objects, &mut problems);
            let Ok(config) = &relay.config else { continue };
            check_leases(&relay, config, &mut problems);
            match config.ops.listen.parse::<std::net::SocketAddr>() {
                Ok(listen) => check_ops_port(&relay, &render.objects, listen, &mut problems),
                Err(_) => problems.push(format!(
                    "{}: ops.listen {:?} is not an address",
                    relay.place, config.ops.listen
                )),
            }
        }
    }
    problems.check(deployments > 0, || {
        "no relay Deployment in the renders".into()
    });
    problems.assert_none("relay Deployment");
}

/// The replicas of the Deployment (1 when unset, as Kubernetes defaults it).
fn replicas(relay: &RelayContainer) -> u64 {
    relay.workload["spec"]["replicas"].as_u64().unwrap_or(1)
}

/// Several replicas, replaced one at a time: a new pod joins the lease group
/// and becomes ready before an old one hands its tenants over.
fn check_rollout(relay: &RelayContainer, problems: &mut Problems) {
    let spec = &relay.workload["spec"];
    let place = &relay.place;
    problems.check(replicas(relay) >= 2, || {
        format!(
            "{place}: replicas must be at least 2 (one replica lost stops every tenant), is {}",
            replicas(relay)
        )
    });
    let strategy = &spec["strategy"];
    problems.check(strategy["type"] == "RollingUpdate", || {
        format!("{place}: strategy.type must be RollingUpdate (a new pod takes tenants over before the old one leaves), is {}", strategy["type"])
    });
    let rolling = &strategy["rollingUpdate"];
    problems.check(rolling["maxUnavailable"] == 0, || {
        format!("{place}: strategy.rollingUpdate.maxUnavailable must be 0 (no replica stops before its replacement is ready), is {}", rolling["maxUnavailable"])
    });
    let surge = &rolling["maxSurge"];
    problems.check(*surge != 0 && *surge != "0%", || {
        format!("{place}: strategy.rollingUpdate.maxSurge must allow a pod above replicas (with maxUnavailable 0 the rollout cannot start otherwise), is {surge}")
    });
    problems.check(
        selects(&spec["selector"], &spec["template"]["metadata"]["labels"]),
        || format!("{place}: spec.selector does not match the pod template's labels"),
    );
}

/// The replicas prefer (or require) different nodes, so one node's failure or
/// drain takes one replica at most.
fn check_anti_affinity(relay: &RelayContainer, problems: &mut Problems) {
    let template = &relay.workload["spec"]["template"];
    let labels = &template["metadata"]["labels"];
    let anti = &template["spec"]["affinity"]["podAntiAffinity"];
    let preferred = items(anti, "/preferredDuringSchedulingIgnoredDuringExecution")
        .iter()
        .map(|w| &w["podAffinityTerm"]);
    let required = items(anti, "/requiredDuringSchedulingIgnoredDuringExecution").iter();
    let per_node = preferred.chain(required).any(|term| {
        term["topologyKey"] == "kubernetes.io/hostname" && selects(&term["labelSelector"], labels)
    });
    problems.check(per_node, || {
        format!("{}: no podAntiAffinity term with topologyKey kubernetes.io/hostname selects the relay pods (replicas could share a node)", relay.place)
    });
}

/// A PodDisruptionBudget over the relay pods lets voluntary disruptions
/// evict some of them but always keeps one.
fn check_disruption_budget(relay: &RelayContainer, objects: &[Value], problems: &mut Problems) {
    let place = &relay.place;
    let labels = &relay.workload["spec"]["template"]["metadata"]["labels"];
    let replicas = replicas(relay);
    let budgets: Vec<&Value> = of_kind(objects, "PodDisruptionBudget")
        .filter(|b| selects(&b["spec"]["selector"], labels))
        .collect();
    problems.check(!budgets.is_empty(), || {
        format!("{place}: no PodDisruptionBudget selects the relay pods")
    });
    for b in budgets {
        let spec = &b["spec"];
        // Pods a drain may evict at once; integers only, percentages depend
        // on rounding.
        let evictable = match (
            spec["minAvailable"].as_u64(),
            spec["maxUnavailable"].as_u64(),
        ) {
            (Some(min), None) if min >= 1 => Some(replicas.saturating_sub(min)),
            (None, Some(max)) if max < replicas => Some(max),
            _ => None,
        };
        problems.check(evictable.is_some_and(|n| n >= 1), || {
            format!(
                "{}: must keep at least one of the {replicas} relay pods and let a drain evict one (minAvailable: 1 or maxUnavailable: 1), has minAvailable {} maxUnavailable {}",
                id(b),
                spec["minAvailable"],
                spec["maxUnavailable"]
            )
        });
    }
}

/// The configuration the replicas load shares the tenants between them:
/// without `ha.enabled` every replica would open every socket and publish
/// every event once per replica.
fn check_leases(relay: &RelayContainer, config: &Config, problems: &mut Problems) {
    let place = &relay.place;
    problems.check(config.ha.enabled, || {
        format!(
            "{place}: ha.enabled must be true with {} replicas (each would relay every tenant)",
            replicas(relay)
        )
    });
    // One ConfigMap for every replica: a member name written there would be
    // the same in every pod. Empty takes the pod's name; a variable set from
    // the pod's own fields differs per pod too.
    let per_pod_variable = items(relay.container, "/env")
        .iter()
        .any(|e| e["name"] == "STUDIO_RELAY__HA__MEMBER" && e["valueFrom"]["fieldRef"].is_object());
    problems.check(config.ha.member.is_empty() || per_pod_variable, || {
        format!(
            "{place}: ha.member {:?} is the same in every replica: leave it empty (the pod's name)",
            config.ha.member
        )
    });
}

/// The probes, the Service and the ServiceMonitor all reach the ops listener,
/// which listens beyond loopback.
fn check_ops_port(
    relay: &RelayContainer,
    objects: &[Value],
    listen: std::net::SocketAddr,
    problems: &mut Problems,
) {
    let place = &relay.place;
    let c = relay.container;
    let port_number = |port: &Value| -> Option<u64> {
        port.as_u64().or_else(|| {
            let named = items(c, "/ports").iter().find(|p| p["name"] == *port)?;
            named["containerPort"].as_u64()
        })
    };
    let ops_port = u64::from(listen.port());
    problems.check(!listen.ip().is_loopback(), || {
        format!("{place}: ops.listen {listen} is loopback: probes and Prometheus cannot reach it")
    });
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        problems.check(get["path"] == path, || {
            format!("{place}: {probe} must GET {path} (is {})", get["path"])
        });
        problems.check(port_number(&get["port"]) == Some(ops_port), || {
            format!(
                "{place}: {probe} port {} is not the ops port {ops_port}",
                get["port"]
            )
        });
    }
    let pod_labels = &relay.workload["spec"]["template"]["metadata"]["labels"];
    let services: Vec<&Value> = of_kind(objects, "Service")
        .filter(|s| selects(&s["spec"]["selector"], pod_labels))
        .collect();
    problems.check(!services.is_empty(), || {
        format!("{place}: no Service selects the relay pods")
    });
    for s in &services {
        for p in items(s, "/spec/ports") {
            let target = p.get("targetPort").unwrap_or(&p["port"]);
            problems.check(port_number(target) == Some(ops_port), || {
                format!(
                    "{}: targetPort {target} is not the ops port {ops_port}",
                    id(s)
                )
            });
        }
    }
    let policies = of_kind(objects, "NetworkPolicy")
        .filter(|o| selects(&o["spec"]["podSelector"], pod_labels))
        .count();
    problems.check(policies > 0, || {
        format!("{place}: no NetworkPolicy selects the relay pods")
    });
    check_service_monitor(place, objects, &services, problems);
}

fn check_service_monitor(
    place: &str,
    objects: &[Value],
    services: &[&Value],
    problems: &mut Problems,
) {
    let monitors: Vec<&Value> = of_kind(objects, "ServiceMonitor")
        .filter(|m| {
            services
                .iter()
                .any(|s| selects(&m["spec"]["selector"], &s["metadata"]["labels"]))
        })
        .collect();
    problems.check(!monitors.is_empty(), || {
        format!("{place}: no ServiceMonitor selects its Service")
    });
    for m in monitors {
        for e in items(m, "/spec/endpoints") {
            let port = &e["port"];
            let named = services
                .iter()
                .any(|s| items(s, "/spec/ports").iter().any(|p| p["name"] == *port));
            problems.check(named, || {
                format!(
                    "{}: endpoint port {port} is not a port name of the relay's Service",
                    id(m)
                )
            });
        }
    }
}

/// The NetworkPolicy lets the relay reach DNS and every endpoint of its
/// configuration, and lets Prometheus reach its ops port.
#[test]
fn network_policy_allows_what_the_relay_talks_to() {
    let image = Dockerfile::load();
    let mut problems = Problems::default();
    for render in renders() {
        for relay in relay_containers(render, &image) {
            let Ok(config) = &relay.config else { continue };
            let labels = &pod_template(relay.workload).expect("a workload")["metadata"]["labels"];
            let policies = all_objects().filter(|o| {
                kind(o) == "NetworkPolicy" && selects(&o["spec"]["podSelector"], labels)
            });
            for policy in policies {
                let types = items(policy, "/spec/policyTypes");
                let ports = |direction: &str| -> Vec<u64> {
                    items(policy, &format!("/spec/{direction}"))
                        .iter()
                        .flat_map(|rule| items(rule, "/ports"))
                        .filter_map(|p| p["port"].as_u64())
                        .collect()
                };
                let place = format!("{} ({}, {})", id(policy), relay.place, render.dir);
                if types.iter().any(|t| t == "Egress") {
                    let mut needed = vec![("DNS".to_string(), 53)];
                    needed.extend(
                        endpoints(config)
                            .into_iter()
                            .map(|(key, host, port)| (format!("{key} {host}"), port)),
                    );
                    for (what, port) in needed {
                        problems.check(ports("egress").contains(&u64::from(port)), || {
                            format!("{place}: egress does not allow port {port} ({what})")
                        });
                    }
                }
                let listen = config.ops.listen.parse::<std::net::SocketAddr>().ok();
                if let (Some(listen), true) = (
                    listen,
                    types.iter().any(|t| t == "Ingress") && kind(relay.workload) == "Deployment",
                ) {
                    problems.check(ports("ingress").contains(&u64::from(listen.port())), || {
                        format!(
                            "{place}: ingress does not allow the ops port {}",
                            listen.port()
                        )
                    });
                }
            }
        }
    }
    problems.assert_none("NetworkPolicy");
}
