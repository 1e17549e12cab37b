//! The CLI lists its subcommands, `check-config` accepts the
//! example config without printing the token, and bad configs exit 2 with one
//! line naming the key.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_studio-relay");
const TOKEN: &str = "tok-7f3a-very-secret";

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("TELAVOX_TOKEN")
        .env_remove("STUDIO_RELAY_CONFIG");
    for (k, _) in std::env::vars() {
        if k.starts_with("STUDIO_RELAY__") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run studio-relay")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write_config(body: &str) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(f.path(), body).unwrap();
    f
}

#[test]
fn help_lists_the_subcommands() {
    let o = run(&["--help"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    for sub in [
        "run",
        "replay",
        "simulate",
        "demo",
        "schemas",
        "check-config",
    ] {
        assert!(out.contains(sub), "--help does not list {sub}:\n{out}");
    }
}

#[test]
fn example_config_is_valid_and_the_token_is_never_printed() {
    let o = run(
        &[
            "check-config",
            "--config",
            "config/studio-relay.example.toml",
        ],
        &[("TELAVOX_TOKEN", TOKEN)],
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(!out.contains(TOKEN), "token leaked:\n{out}");
    assert!(
        out.contains("[redacted]"),
        "token should show as redacted:\n{out}"
    );
}

#[test]
fn unknown_key_exits_2_naming_the_key() {
    let f = write_config("[sink]\nkind = \"nats\"\nflavour = \"spicy\"\n");
    let o = run(
        &["check-config", "--config", f.path().to_str().unwrap()],
        &[("TELAVOX_TOKEN", TOKEN)],
    );
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line expected:\n{err}");
    assert!(err.contains("sink") && err.contains("flavour"), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn empty_token_exits_2_naming_the_key() {
    let o = run(&["check-config"], &[("TELAVOX_TOKEN", "")]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line expected:\n{err}");
    assert!(err.contains("tenants[0].token"), "{err}");
}

#[test]
fn wrong_type_bad_url_and_bad_template_exit_2() {
    for (body, key) in [
        (
            "[relay]\nqueue_capacity = \"lots\"\n",
            "relay.queue_capacity",
        ),
        ("[upstream]\nlive_url = \"ftp://x\"\n", "upstream.live_url"),
        (
            "[upstream]\nreceive_buffer_bytes = 100\n",
            "upstream.receive_buffer_bytes",
        ),
        (
            "[sink]\ntopic_template = \"t.{sauce}\"\n",
            "sink.topic_template",
        ),
    ] {
        let f = write_config(body);
        let o = run(
            &["check-config", "--config", f.path().to_str().unwrap()],
            &[("TELAVOX_TOKEN", TOKEN)],
        );
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(2), "{body}: {err}");
        assert!(err.contains(key), "{body}: {err}");
    }
}

#[test]
fn token_file_and_env_overrides_apply() {
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, format!("{TOKEN}\n")).unwrap();
    let o = run(
        &["check-config"],
        &[
            (
                "STUDIO_RELAY__TENANTS__0__TOKEN_FILE",
                token_path.to_str().unwrap(),
            ),
            ("STUDIO_RELAY__SINK__KIND", "kafka"),
        ],
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("kind = \"kafka\""), "{out}");
    assert!(!out.contains(TOKEN), "{out}");
}
