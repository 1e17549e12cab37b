//! Every command line of the manifests, docker-compose.yml and the Dockerfile,
//! parsed by the relay's own command-line parser.

use clap::Parser;
use serde_json::Value;
use studio_relay::cli::{Cli, Command};

use crate::dockerfile::Dockerfile;
use crate::{compose, containers, id, pod_template, renders, Problems};

/// Parses `studio-relay <args>` as the binary would.
pub fn parse(args: &[String]) -> Result<Cli, String> {
    let argv = std::iter::once("studio-relay".to_string()).chain(args.iter().cloned());
    Cli::try_parse_from(argv).map_err(|e| {
        let text = e.render().to_string();
        let message: Vec<&str> = text
            .lines()
            .map(str::trim)
            .take_while(|l| !l.starts_with("Usage:"))
            .filter(|l| !l.is_empty())
            .collect();
        format!("`studio-relay {}`: {}", args.join(" "), message.join(" "))
    })
}

/// Whether the subcommand reads the relay configuration.
pub fn loads_config(cli: &Cli) -> bool {
    matches!(
        cli.command,
        Command::Run | Command::Replay(_) | Command::CheckConfig | Command::Demo(_)
    )
}

/// `studio-relay`'s arguments in a container, `None` when it runs another
/// program, `Err` when its command line cannot be put together.
pub type ContainerArgs = Result<Option<Vec<String>>, String>;

/// The arguments `studio-relay` gets in a container of the image: an
/// entrypoint override replaces the image's ENTRYPOINT and drops its CMD (as
/// Docker and Kubernetes do). `Ok(None)` when the container runs another program.
pub fn container_args(
    entrypoint: Option<Vec<String>>,
    command: Option<Vec<String>>,
    image: &Dockerfile,
) -> ContainerArgs {
    let image_cmd = || {
        image
            .exec_form("CMD")
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let (program, args) = match entrypoint {
        Some(mut argv) if !argv.is_empty() => {
            let rest = argv.split_off(1);
            (argv.remove(0), [rest, command.unwrap_or_default()].concat())
        }
        _ => {
            let mut argv = image
                .exec_form("ENTRYPOINT")
                .transpose()?
                .unwrap_or_default();
            argv.extend(match command {
                Some(c) => c,
                None => image_cmd()?,
            });
            if argv.is_empty() {
                return Err("the container has no command".into());
            }
            let rest = argv.split_off(1);
            (argv.remove(0), rest)
        }
    };
    let runs_relay = std::path::Path::new(&program)
        .file_name()
        .is_some_and(|f| f == "studio-relay");
    Ok(runs_relay.then_some(args))
}

/// A JSON array of strings (a container's `command` / `args`), if present.
pub fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .map(|s| match s {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    })
}

#[test]
fn every_command_line_parses_with_the_real_parser() {
    let image = Dockerfile::load();
    // (source, place, the arguments studio-relay gets there)
    let mut lines: Vec<(&str, String, ContainerArgs)> = Vec::new();
    lines.push((
        "Dockerfile",
        "ENTRYPOINT + CMD".into(),
        container_args(None, None, &image),
    ));
    for render in renders() {
        for workload in &render.objects {
            let Some(template) = pod_template(workload) else {
                continue;
            };
            for c in containers(&template["spec"]) {
                let place = format!("{} {} container {}", render.dir, id(workload), c["name"]);
                let args = container_args(strings(&c["command"]), strings(&c["args"]), &image);
                lines.push(("deploy/kubernetes", place, args));
            }
        }
    }
    for (name, service) in compose::own_image_services() {
        let args = container_args(
            strings(&service["entrypoint"]),
            strings(&service["command"]),
            &image,
        );
        lines.push(("docker-compose.yml", format!("service {name}"), args));
    }
    let mut problems = Problems::default();
    let mut parsed = std::collections::BTreeSet::new();
    for (source, place, args) in lines {
        match args.and_then(|a| a.map(|a| parse(&a)).transpose()) {
            Ok(Some(_)) => {
                parsed.insert(source);
            }
            Ok(None) => {}
            Err(e) => problems.push(format!("{source} {place}: {e}")),
        }
    }
    for source in ["Dockerfile", "deploy/kubernetes", "docker-compose.yml"] {
        problems.check(parsed.contains(source), || {
            format!("{source}: no studio-relay command line parsed")
        });
    }
    problems.assert_none("command lines");
}
