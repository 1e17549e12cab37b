//! The Dockerfile: a multi-stage build whose runtime stage runs `studio-relay`
//! as a non-root user, stops on SIGTERM, checks its health, and copies only
//! what exists in the build context.

use globset::{GlobBuilder, GlobMatcher};

use crate::{read, root, Problems};

/// One instruction: its keyword in upper case and the rest of its line(s).
pub struct Instruction {
    pub keyword: String,
    pub args: String,
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
pub struct Dockerfile(pub Vec<Instruction>);

impl Dockerfile {
    pub fn load() -> Dockerfile {
        let mut out = Vec::new();
        let mut pending = String::new();
        for line in read("Dockerfile").lines() {
            let line = line.trim();
            if line.starts_with('#') || (pending.is_empty() && line.is_empty()) {
                continue;
            }
            match line.strip_suffix('\\') {
                Some(part) => pending.push_str(part),
                None => {
                    pending.push_str(line);
                    let (keyword, args) = pending.split_once(' ').unwrap_or((&pending, ""));
                    out.push(Instruction {
                        keyword: keyword.to_ascii_uppercase(),
                        args: args.trim().to_string(),
                    });
                    pending.clear();
                }
            }
        }
        Dockerfile(out)
    }

    /// The instructions of the last stage (the image that runs).
    pub fn runtime_stage(&self) -> &[Instruction] {
        let start = self
            .0
            .iter()
            .rposition(|i| i.keyword == "FROM")
            .unwrap_or(0);
        &self.0[start..]
    }

    /// The arguments of the runtime stage's last `keyword` instruction.
    pub fn last(&self, keyword: &str) -> Option<&str> {
        self.runtime_stage()
            .iter()
            .rev()
            .find(|i| i.keyword == keyword)
            .map(|i| i.args.as_str())
    }

    /// ENTRYPOINT or CMD in exec form (`["a", "b"]`); `Err` for the shell form.
    pub fn exec_form(&self, keyword: &str) -> Option<Result<Vec<String>, String>> {
        self.last(keyword).map(|args| {
            serde_json::from_str(args)
                .map_err(|_| format!("{keyword} {args} is not in exec form ([\"...\"])"))
        })
    }

    /// The variables every container of the image starts with (`ENV k=v ...`).
    pub fn env(&self) -> Vec<(String, String)> {
        self.runtime_stage()
            .iter()
            .filter(|i| i.keyword == "ENV")
            .flat_map(|i| i.args.split_whitespace())
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect()
    }
}

#[test]
fn the_image_runs_the_relay_as_a_non_root_user_that_drains_on_sigterm() {
    let dockerfile = Dockerfile::load();
    let mut problems = Problems::default();
    let stages = dockerfile.0.iter().filter(|i| i.keyword == "FROM").count();
    problems.check(stages >= 2, || {
        format!("{stages} stage(s): the runtime image must not carry the build toolchain (builder + runtime stage)")
    });
    let user = dockerfile.last("USER").unwrap_or("root");
    let uid = user.split(':').next().unwrap_or_default();
    problems.check(uid.parse::<u32>().is_ok_and(|u| u != 0), || {
        format!("USER {user}: the runtime stage must end with a numeric non-root USER (runAsNonRoot can only verify a number)")
    });
    problems.check(dockerfile.last("STOPSIGNAL") == Some("SIGTERM"), || {
        "the runtime stage needs STOPSIGNAL SIGTERM (the relay drains on SIGTERM)".into()
    });
    match dockerfile.exec_form("ENTRYPOINT") {
        Some(Ok(argv)) if argv.first().map(String::as_str) == Some("studio-relay") => {}
        Some(Err(e)) => problems.push(e),
        other => problems.push(format!(
            "ENTRYPOINT must be [\"studio-relay\"] in exec form (signals reach the relay, not a shell), is {other:?}"
        )),
    }
    if let Some(Err(e)) = dockerfile.exec_form("CMD") {
        problems.push(e);
    }
    check_healthcheck(&dockerfile, &mut problems);
    check_copy_sources(&dockerfile, &mut problems);
    problems.assert_none("Dockerfile");
}

fn check_healthcheck(dockerfile: &Dockerfile, problems: &mut Problems) {
    let Some(healthcheck) = dockerfile.last("HEALTHCHECK") else {
        problems.push("the runtime stage has no HEALTHCHECK".into());
        return;
    };
    problems.check(healthcheck.contains("/healthz"), || {
        format!("HEALTHCHECK must probe /healthz (liveness; /readyz would restart on every broker outage): {healthcheck}")
    });
    let installs = |program: &str| {
        dockerfile
            .runtime_stage()
            .iter()
            .any(|i| i.keyword == "RUN" && i.args.split_whitespace().any(|w| w == program))
    };
    for program in ["curl", "wget"] {
        problems.check(!healthcheck.contains(program) || installs(program), || {
            format!("HEALTHCHECK uses {program}, which the runtime stage does not install")
        });
    }
}

/// Every source of a build-context COPY exists and is not excluded by
/// .dockerignore (Docker matches its patterns against the path and every
/// parent directory of it).
fn check_copy_sources(dockerfile: &Dockerfile, problems: &mut Problems) {
    let ignored = dockerignore();
    for copy in dockerfile.0.iter().filter(|i| i.keyword == "COPY") {
        let words: Vec<&str> = copy.args.split_whitespace().collect();
        if words.iter().any(|w| w.starts_with("--from=")) {
            continue;
        }
        let paths: Vec<&str> = words.into_iter().filter(|w| !w.starts_with("--")).collect();
        for source in &paths[..paths.len().saturating_sub(1)] {
            let source = source.trim_end_matches('/').trim_start_matches("./");
            problems.check(root().join(source).exists(), || {
                format!("COPY source {source} does not exist")
            });
            problems.check(!ignored(source), || {
                format!("COPY source {source} is excluded by .dockerignore")
            });
        }
    }
}

fn dockerignore() -> impl Fn(&str) -> bool {
    let text = std::fs::read_to_string(root().join(".dockerignore")).unwrap_or_default();
    // In order: the last pattern that matches decides, `!` re-includes.
    let patterns: Vec<(bool, GlobMatcher)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (include, pattern) = l.strip_prefix('!').map_or((false, l), |p| (true, p));
            let glob = GlobBuilder::new(pattern.trim_matches('/'))
                .literal_separator(true)
                .build()
                .unwrap_or_else(|e| panic!(".dockerignore: {l}: {e}"));
            (include, glob.compile_matcher())
        })
        .collect();
    move |path: &str| {
        let mut ignored = false;
        for (include, glob) in &patterns {
            let mut prefix = std::path::PathBuf::new();
            let matches = std::path::Path::new(path).components().any(|c| {
                prefix.push(c);
                glob.is_match(&prefix)
            });
            if matches {
                ignored = !include;
            }
        }
        ignored
    }
}
