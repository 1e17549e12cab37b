//! Loading: defaults → TOML file → environment, then token resolution and validation.
//!
//! Environment overrides: `STUDIO_RELAY__` + the key path in upper case with
//! `__` between segments. Array elements are addressed by index:
//!
//! ```text
//! STUDIO_RELAY__SINK__KIND=kafka
//! STUDIO_RELAY__SINK__KAFKA__BROKERS=kafka-0:9092,kafka-1:9092
//! STUDIO_RELAY__TENANTS__0__TOKEN_FILE=/var/run/secrets/telavox/token
//! STUDIO_RELAY__UPSTREAM__SOURCES='["calls","queues"]'
//! ```
//!
//! A value is read as TOML when it is a boolean, a number or an array, and as
//! a string otherwise; quote it (`'"123"'`) to force a string.

use std::path::Path;
use std::time::Duration;

use super::{CheckpointMode, Config, EncodingFormat, SinkKind};
use crate::config::Secret;

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "STUDIO_RELAY__";

/// A configuration problem, always naming the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The key path the error is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// Loads the configuration from an optional file and the process environment.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    let (text, origin) = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.display().to_string(),
                source,
            })?;
            (text, p.display().to_string())
        }
        None => (String::new(), "<defaults>".to_string()),
    };
    load_from_str(&text, &origin, std::env::vars(), |p| {
        std::fs::read_to_string(p)
    })
}

/// Loads from TOML text and an explicit environment (tests pass their own).
/// `read_file` reads `token_file`s.
pub fn load_from_str(
    text: &str,
    origin: &str,
    env: impl IntoIterator<Item = (String, String)>,
    read_file: impl Fn(&Path) -> std::io::Result<String>,
) -> Result<Config, ConfigError> {
    let mut doc: toml::Value = if text.trim().is_empty() {
        toml::Value::Table(Default::default())
    } else {
        text.parse::<toml::Table>()
            .map(toml::Value::Table)
            .map_err(|e| ConfigError::Syntax {
                path: origin.to_string(),
                message: one_line(&e.to_string()),
            })?
    };
    let env: Vec<(String, String)> = env.into_iter().collect();
    let mut overrides: Vec<(&str, &str)> = env
        .iter()
        .filter_map(|(name, value)| Some((name.strip_prefix(ENV_PREFIX)?, value.as_str())))
        .collect();
    // Array elements in index order, whatever order the environment lists
    // them in (`TENANTS__10__…` after `TENANTS__2__…`).
    overrides.sort_by_cached_key(|(path, _)| override_order(path));
    for (path, value) in overrides {
        apply_override(&mut doc, path, value)?;
    }
    let mut config: Config = serde_path_to_error::deserialize(doc).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." {
            "(top level)".to_string()
        } else {
            key
        };
        ConfigError::invalid(key, one_line(&e.into_inner().to_string()))
    })?;
    resolve_tokens(&mut config, &env, read_file)?;
    validate(&config)?;
    Ok(config)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Sorts a key path's segments, numbers by value.
fn override_order(path: &str) -> Vec<(u64, String)> {
    path.split("__")
        .map(|seg| match seg.parse::<u64>() {
            Ok(n) => (n, String::new()),
            Err(_) => (u64::MAX, seg.to_string()),
        })
        .collect()
}

fn apply_override(doc: &mut toml::Value, path: &str, raw: &str) -> Result<(), ConfigError> {
    let segments: Vec<String> = path.split("__").map(|s| s.to_ascii_lowercase()).collect();
    let key = format!("{ENV_PREFIX}{path}");
    if segments.iter().any(|s| s.is_empty()) {
        return Err(ConfigError::invalid(
            key,
            "empty segment in environment override name",
        ));
    }
    let value = parse_env_value(raw);
    let mut cur = doc;
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let next_is_index = segments
            .get(i + 1)
            .is_some_and(|s| s.parse::<usize>().is_ok());
        let empty = || {
            if next_is_index {
                toml::Value::Array(vec![])
            } else {
                toml::Value::Table(Default::default())
            }
        };
        cur = match cur {
            toml::Value::Table(t) => {
                if last {
                    t.insert(seg.clone(), value);
                    return Ok(());
                }
                t.entry(seg.clone()).or_insert_with(empty)
            }
            toml::Value::Array(a) => {
                let idx: usize = seg.parse().map_err(|_| {
                    ConfigError::invalid(&key, format!("`{seg}` is not an array index"))
                })?;
                if idx > a.len() {
                    return Err(ConfigError::invalid(
                        &key,
                        format!("index {idx} skips elements (array has {})", a.len()),
                    ));
                }
                if idx == a.len() {
                    a.push(empty());
                }
                if last {
                    a[idx] = value;
                    return Ok(());
                }
                &mut a[idx]
            }
            _ => {
                return Err(ConfigError::invalid(
                    &key,
                    format!("`{seg}` is inside a value that is not a table"),
                ))
            }
        };
    }
    Ok(())
}

fn parse_env_value(raw: &str) -> toml::Value {
    let parsed = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"));
    match parsed {
        Some(
            v @ (toml::Value::Boolean(_)
            | toml::Value::Integer(_)
            | toml::Value::Float(_)
            | toml::Value::Array(_)),
        ) => v,
        Some(toml::Value::String(s))
            if raw.trim_start().starts_with('"') || raw.trim_start().starts_with('\'') =>
        {
            toml::Value::String(s)
        }
        _ => toml::Value::String(raw.to_string()),
    }
}

fn resolve_tokens(
    config: &mut Config,
    env: &[(String, String)],
    read_file: impl Fn(&Path) -> std::io::Result<String>,
) -> Result<(), ConfigError> {
    // Without a token directory, the one tenant `default` with TELAVOX_TOKEN.
    if config.tenants.is_empty() && config.token_dir.path.trim().is_empty() {
        config.tenants.push(Default::default());
    }
    for (i, tenant) in config.tenants.iter_mut().enumerate() {
        if !tenant.token.is_empty() {
            continue;
        }
        if let Some(path) = &tenant.token_file {
            let text = read_file(path).map_err(|e| {
                ConfigError::invalid(
                    format!("tenants[{i}].token_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            if text.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("tenants[{i}].token_file"),
                    format!("empty token: {} is empty", path.display()),
                ));
            }
            tenant.token = Secret::new(text.trim());
            continue;
        }
        let from_env = env
            .iter()
            .find(|(k, _)| *k == tenant.token_env)
            .map(|(_, v)| v.trim().to_string());
        match from_env {
            Some(v) if !v.is_empty() => tenant.token = Secret::new(v),
            _ => {
                return Err(ConfigError::invalid(
                    format!("tenants[{i}].token"),
                    format!(
                        "empty token for tenant `{}`: set the {} environment variable or tenants[{i}].token_file",
                        tenant.name, tenant.token_env
                    ),
                ))
            }
        }
    }
    Ok(())
}

fn validate(c: &Config) -> Result<(), ConfigError> {
    check_url("upstream.live_url", &c.upstream.live_url, &["ws", "wss"])?;
    check_url(
        "upstream.graphql_url",
        &c.upstream.graphql_url,
        &["http", "https"],
    )?;
    if c.token_dir.poll_interval.is_zero() {
        return Err(ConfigError::invalid(
            "token_dir.poll_interval",
            "must be above zero",
        ));
    }
    validate_ha(c)?;
    if c.ops.tenant_label_buckets == 0 {
        return Err(ConfigError::invalid(
            "ops.tenant_label_buckets",
            "must be at least 1",
        ));
    }
    if c.upstream.sources.is_empty() {
        return Err(ConfigError::invalid(
            "upstream.sources",
            "at least one source is required",
        ));
    }
    if c.upstream.backoff_min.is_zero() || c.upstream.backoff_min > c.upstream.backoff_max {
        return Err(ConfigError::invalid(
            "upstream.backoff_min",
            "must be above zero and at most upstream.backoff_max",
        ));
    }
    if c.upstream.max_frame_bytes < 1024 {
        return Err(ConfigError::invalid(
            "upstream.max_frame_bytes",
            "must be at least 1024",
        ));
    }
    if c.upstream.receive_buffer_bytes != 0 && c.upstream.receive_buffer_bytes < 4096 {
        return Err(ConfigError::invalid(
            "upstream.receive_buffer_bytes",
            "must be 0 (the kernel's default) or at least 4096",
        ));
    }
    if c.sink.deadletter_max_bytes < 1024 {
        return Err(ConfigError::invalid(
            "sink.deadletter_max_bytes",
            "must be at least 1024",
        ));
    }
    let mut names = std::collections::HashSet::new();
    for (i, t) in c.tenants.iter().enumerate() {
        let ok = !t.name.is_empty()
            && t.name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
        if !ok {
            return Err(ConfigError::invalid(
                format!("tenants[{i}].name"),
                format!(
                    "{:?} is not a valid tenant name (letters, digits, `-`, `_`)",
                    t.name
                ),
            ));
        }
        if !names.insert(t.name.as_str()) {
            return Err(ConfigError::invalid(
                format!("tenants[{i}].name"),
                format!("duplicate tenant name {:?}", t.name),
            ));
        }
        if t.sources.as_ref().is_some_and(Vec::is_empty) {
            return Err(ConfigError::invalid(
                format!("tenants[{i}].sources"),
                "at least one source is required (leave it out for upstream.sources)",
            ));
        }
    }
    if let Some(reg) = &c.encoding.schema_registry {
        check_url("encoding.schema_registry.url", &reg.url, &["http", "https"])?;
        if c.encoding.format != EncodingFormat::Avro {
            return Err(ConfigError::invalid(
                "encoding.schema_registry",
                "a schema registry needs encoding.format = \"avro\"",
            ));
        }
        check_schema_registry(reg)?;
    }
    check_topic_template("sink.topic_template", &c.sink.topic_template, true)?;
    check_topic_template("sink.deadletter_topic", &c.sink.deadletter_topic, false)?;
    check_topic_template("sink.control_topic", &c.sink.control_topic, false)?;
    if c.relay.queue_capacity == 0 {
        return Err(ConfigError::invalid(
            "relay.queue_capacity",
            "must be above zero",
        ));
    }
    check_checkpoint(c)?;
    match c.sink.kind {
        SinkKind::Kafka => {
            let k = &c.sink.kafka;
            if k.brokers.trim().is_empty() {
                return Err(ConfigError::invalid(
                    "sink.kafka.brokers",
                    "empty broker list",
                ));
            }
            if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&k.compression.as_str()) {
                return Err(ConfigError::invalid(
                    "sink.kafka.compression",
                    format!(
                        "{:?} is not one of none, gzip, snappy, lz4, zstd",
                        k.compression
                    ),
                ));
            }
            if k.partitions < 1 {
                return Err(ConfigError::invalid(
                    "sink.kafka.partitions",
                    "must be at least 1",
                ));
            }
            for (key, factor) in [
                ("sink.kafka.replication_factor", k.replication_factor),
                (
                    "sink.kafka.checkpoint_replication_factor",
                    k.checkpoint_replication_factor,
                ),
            ] {
                if factor != -1 && factor < 1 {
                    return Err(ConfigError::invalid(
                        key,
                        "must be at least 1, or -1 for the cluster's default.replication.factor",
                    ));
                }
            }
        }
        SinkKind::Nats => {
            let n = &c.sink.nats;
            for (i, u) in n.url.split(',').enumerate() {
                check_url(
                    &format!("sink.nats.url[{i}]"),
                    u.trim(),
                    &["nats", "tls", "ws", "wss"],
                )?;
            }
            if n.max_pending_acks == 0 {
                return Err(ConfigError::invalid(
                    "sink.nats.max_pending_acks",
                    "must be above zero",
                ));
            }
            if !["limits", "interest", "workqueue"].contains(&n.retention.as_str()) {
                return Err(ConfigError::invalid(
                    "sink.nats.retention",
                    "must be limits, interest or workqueue",
                ));
            }
            if !["file", "memory"].contains(&n.storage.as_str()) {
                return Err(ConfigError::invalid(
                    "sink.nats.storage",
                    "must be file or memory",
                ));
            }
        }
        SinkKind::Stdout => {}
    }
    Ok(())
}

/// The restart checkpoint keys: a file only with `checkpoint = "file"` (a
/// file set but ignored would be a silent misconfiguration), names valid
/// for both a NATS KV bucket and a Kafka topic, keys valid as NATS KV keys.
fn check_checkpoint(c: &Config) -> Result<(), ConfigError> {
    let r = &c.relay;
    match r.checkpoint {
        CheckpointMode::File if r.checkpoint_file.trim().is_empty() => {
            return Err(ConfigError::invalid(
                "relay.checkpoint_file",
                "empty, but relay.checkpoint = \"file\" needs a path (on a volume)",
            ))
        }
        CheckpointMode::Broker | CheckpointMode::Off if !r.checkpoint_file.is_empty() => {
            return Err(ConfigError::invalid(
                "relay.checkpoint_file",
                format!(
                    "set, but relay.checkpoint is {:?}: set relay.checkpoint = \"file\" to use the file, or remove relay.checkpoint_file",
                    r.checkpoint.as_str()
                ),
            ))
        }
        _ => {}
    }
    let name_ok = !r.checkpoint_store.is_empty()
        && r.checkpoint_store.len() <= 200
        && r.checkpoint_store
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
    if !name_ok {
        return Err(ConfigError::invalid(
            "relay.checkpoint_store",
            format!(
                "{:?} is not a valid NATS KV bucket and Kafka topic name (letters, digits, `-`, `_`)",
                r.checkpoint_store
            ),
        ));
    }
    let key_ok = !r.checkpoint_key.is_empty()
        && r.checkpoint_key.len() <= 200
        && !r.checkpoint_key.starts_with('.')
        && !r.checkpoint_key.ends_with('.')
        && r.checkpoint_key
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch));
    if !key_ok {
        return Err(ConfigError::invalid(
            "relay.checkpoint_key",
            format!(
                "{:?} is not a valid checkpoint key (letters, digits, `.`, `-`, `_`; not starting or ending with `.`)",
                r.checkpoint_key
            ),
        ));
    }
    Ok(())
}

/// Leases need a broker to hold them and a checkpoint there to hand
/// tenants over with.
fn validate_ha(c: &Config) -> Result<(), ConfigError> {
    let ha = &c.ha;
    if !ha.enabled {
        return Ok(());
    }
    if !(1..=10_000).contains(&ha.shards) {
        return Err(ConfigError::invalid("ha.shards", "must be 1 to 10000"));
    }
    if ha.lease_ttl < Duration::from_secs(1) {
        return Err(ConfigError::invalid("ha.lease_ttl", "must be at least 1s"));
    }
    let broker = match c.sink.kind {
        SinkKind::Kafka => true,
        SinkKind::Nats => c.sink.nats.jetstream,
        SinkKind::Stdout => false,
    };
    if !broker {
        return Err(ConfigError::invalid(
            "ha.enabled",
            "leases are kept in the broker: needs sink.kind = \"kafka\", or \"nats\" with sink.nats.jetstream",
        ));
    }
    if c.relay.checkpoint != CheckpointMode::Broker || !c.relay.gap_backfill {
        return Err(ConfigError::invalid(
            "ha.enabled",
            "a tenant moves to another replica through its checkpoint: needs relay.checkpoint = \"broker\" and relay.gap_backfill",
        ));
    }
    for (key, name) in [
        ("ha.group", &ha.group),
        ("ha.topic", &ha.topic),
        ("ha.bucket", &ha.bucket),
    ] {
        let ok = !name.is_empty()
            && name.len() <= 200
            && name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
        if !ok {
            return Err(ConfigError::invalid(
                key,
                format!("{name:?} is not a valid name (letters, digits, `-`, `_`)"),
            ));
        }
    }
    Ok(())
}

/// The registry's own keys (its URL is checked with every other URL). The CA
/// file is read when the client is built, where an unreadable one stops
/// start-up naming this key too.
fn check_schema_registry(reg: &super::SchemaRegistryConfig) -> Result<(), ConfigError> {
    if reg.password.is_some() && reg.username.is_none() {
        return Err(ConfigError::invalid(
            "encoding.schema_registry.username",
            "a registry password needs a username (HTTP basic auth)",
        ));
    }
    if reg
        .ca_file
        .as_ref()
        .is_some_and(|p| p.as_os_str().is_empty())
    {
        return Err(ConfigError::invalid(
            "encoding.schema_registry.ca_file",
            "is empty; remove the key to trust only the built-in roots",
        ));
    }
    if reg.request_timeout.is_zero() {
        return Err(ConfigError::invalid(
            "encoding.schema_registry.request_timeout",
            "must be above zero",
        ));
    }
    Ok(())
}

fn check_url(key: &str, raw: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let url = url::Url::parse(raw).map_err(|e| {
        ConfigError::invalid(
            key,
            format!(
                "{} is not a valid URL ({e})",
                crate::config::redact_url(raw)
            ),
        )
    })?;
    if !schemes.contains(&url.scheme()) {
        return Err(ConfigError::invalid(
            key,
            format!(
                "scheme `{}` is not one of {}",
                url.scheme(),
                schemes.join(", ")
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::invalid(key, "URL has no host"));
    }
    Ok(())
}

/// Topic templates must produce names valid both as Kafka topics and NATS subjects.
fn check_topic_template(key: &str, template: &str, needs_source: bool) -> Result<(), ConfigError> {
    let mut rest = template;
    let mut literal = String::new();
    while let Some(open) = rest.find('{') {
        literal.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| ConfigError::invalid(key, format!("unclosed `{{` in {template:?}")))?;
        let name = &rest[open + 1..open + close];
        if !["source", "version", "tenant"].contains(&name) {
            return Err(ConfigError::invalid(
                key,
                format!("unknown placeholder {{{name}}} in {template:?}; use {{source}}, {{version}}, {{tenant}}"),
            ));
        }
        literal.push('x');
        rest = &rest[open + close + 1..];
    }
    literal.push_str(rest);
    if literal.contains('}') {
        return Err(ConfigError::invalid(
            key,
            format!("unmatched `}}` in {template:?}"),
        ));
    }
    if needs_source && !template.contains("{source}") {
        return Err(ConfigError::invalid(
            key,
            format!("{template:?} must contain {{source}}: each source has its own schema"),
        ));
    }
    let valid_chars = literal
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch));
    if literal.is_empty()
        || !valid_chars
        || literal.starts_with('.')
        || literal.ends_with('.')
        || literal.contains("..")
        || literal.len() > 200
    {
        return Err(ConfigError::invalid(
            key,
            format!("{template:?} is not a valid topic/subject name (letters, digits, `.`, `_`, `-`; no empty segments)"),
        ));
    }
    Ok(())
}

impl Config {
    /// The configuration as TOML, secrets redacted (what `check-config` prints).
    pub fn redacted_toml(&self) -> String {
        let mut copy = self.clone();
        for (k, v) in copy.sink.kafka.properties.iter_mut() {
            let k = k.to_ascii_lowercase();
            if k.contains("password") || k.contains("secret") || k.contains("token") {
                *v = super::REDACTED.to_string();
            }
        }
        // Every URL anywhere in the config (upstream, registry, NATS server
        // lists, future keys) loses its credentials: one rule, no list to forget.
        let mut value = match toml::Value::try_from(&copy) {
            Ok(v) => v,
            Err(e) => return format!("# cannot render config: {e}\n"),
        };
        redact_urls(&mut value);
        toml::to_string_pretty(&value).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

fn redact_urls(v: &mut toml::Value) {
    match v {
        toml::Value::String(s) if s.contains("://") => {
            *s = s
                .split(',')
                .map(|u| crate::config::redact_url(u.trim()))
                .collect::<Vec<_>>()
                .join(",");
        }
        toml::Value::Array(items) => items.iter_mut().for_each(redact_urls),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| redact_urls(v)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(text: &str, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        load_from_str(text, "test.toml", env(pairs), |p| {
            std::fs::read_to_string(p)
        })
    }

    #[test]
    fn defaults_with_a_token_are_valid() {
        let c = load("", &[("TELAVOX_TOKEN", "t0k")]).unwrap();
        assert_eq!(c.tenants.len(), 1);
        assert_eq!(c.tenants[0].token.expose(), "t0k");
        assert_eq!(c.upstream.sources.len(), 5);
    }

    #[test]
    fn unknown_key_names_its_path() {
        let e = load("[sink]\nknd = \"kafka\"\n", &[("TELAVOX_TOKEN", "x")]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("sink") && msg.contains("knd"), "{msg}");
    }

    #[test]
    fn wrong_type_names_its_path() {
        let e = load(
            "[relay]\nqueue_capacity = \"many\"\n",
            &[("TELAVOX_TOKEN", "x")],
        )
        .unwrap_err();
        assert_eq!(e.key(), Some("relay.queue_capacity"), "{e}");
    }

    #[test]
    fn empty_token_is_an_error_naming_the_tenant_key() {
        let e = load("", &[("TELAVOX_TOKEN", "  ")]).unwrap_err();
        assert_eq!(e.key(), Some("tenants[0].token"), "{e}");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn env_overrides_reach_nested_and_indexed_keys() {
        let c = load(
            "[[tenants]]\nname = \"a\"\ntoken_env = \"TOK_A\"\n",
            &[
                ("TOK_A", "aaa"),
                ("STUDIO_RELAY__SINK__KIND", "nats"),
                ("STUDIO_RELAY__RELAY__QUEUE_CAPACITY", "42"),
                ("STUDIO_RELAY__TENANTS__1__NAME", "b"),
                ("STUDIO_RELAY__TENANTS__1__TOKEN", "bbb"),
                ("STUDIO_RELAY__UPSTREAM__SOURCES", "[\"calls\"]"),
            ],
        )
        .unwrap();
        assert_eq!(c.sink.kind, SinkKind::Nats);
        assert_eq!(c.relay.queue_capacity, 42);
        assert_eq!(c.tenants[1].name, "b");
        assert_eq!(c.tenants[1].token.expose(), "bbb");
        assert_eq!(c.upstream.sources.len(), 1);
    }

    #[test]
    fn leases_need_a_broker_and_its_checkpoint() {
        let key = |toml: &str| {
            load(toml, &[("TELAVOX_TOKEN", "x")])
                .unwrap_err()
                .key()
                .map(str::to_string)
        };
        assert_eq!(key("[ha]\nenabled = true\n").as_deref(), Some("ha.enabled"));
        let kafka = "[sink]\nkind = \"kafka\"\n[ha]\nenabled = true\n";
        assert!(load(kafka, &[("TELAVOX_TOKEN", "x")]).is_ok());
        let file = "[sink]\nkind = \"kafka\"\n[relay]\ncheckpoint = \"file\"\ncheckpoint_file = \"/tmp/c\"\n[ha]\nenabled = true\n";
        assert_eq!(key(file).as_deref(), Some("ha.enabled"));
        let topic = "[sink]\nkind = \"kafka\"\n[ha]\nenabled = true\ntopic = \"a b\"\n";
        assert_eq!(key(topic).as_deref(), Some("ha.topic"));
    }

    #[test]
    fn indexed_env_overrides_apply_in_index_order_whatever_the_environment_order() {
        let names: Vec<(String, String)> = (0..12)
            .rev()
            .flat_map(|i| {
                [
                    (
                        format!("STUDIO_RELAY__TENANTS__{i}__TOKEN"),
                        format!("tok{i}"),
                    ),
                    (format!("STUDIO_RELAY__TENANTS__{i}__NAME"), format!("t{i}")),
                ]
            })
            .collect();
        let env: Vec<(&str, &str)> = names
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let c = load("", &env).unwrap();
        let got: Vec<&str> = c.tenants.iter().map(|t| t.name.as_str()).collect();
        let want: Vec<String> = (0..12).map(|i| format!("t{i}")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn schema_registry_keys_have_defaults_and_are_checked_by_key() {
        let t = &[("TELAVOX_TOKEN", "x")];
        let base =
            "[encoding]\nformat = \"avro\"\n[encoding.schema_registry]\nurl = \"http://r:8081\"\n";
        let c = load(base, t).unwrap();
        let reg = c.encoding.schema_registry.unwrap();
        assert_eq!(reg.mode, super::super::RegistryMode::Register);
        assert!(reg.check_compatibility);
        assert_eq!(reg.retry_for, std::time::Duration::from_secs(60));
        let c = load(
            &format!("{base}mode = \"lookup\"\nretry_for = \"5s\"\nca_file = \"/ca.pem\"\n"),
            t,
        )
        .unwrap();
        let reg = c.encoding.schema_registry.unwrap();
        assert_eq!(reg.mode, super::super::RegistryMode::Lookup);
        assert_eq!(reg.retry_for, std::time::Duration::from_secs(5));
        for (extra, key) in [
            ("mode = \"sometimes\"\n", "encoding.schema_registry.mode"),
            ("password = \"p\"\n", "encoding.schema_registry.username"),
            ("ca_file = \"\"\n", "encoding.schema_registry.ca_file"),
            (
                "retry_for = \"soon\"\n",
                "encoding.schema_registry.retry_for",
            ),
            (
                "request_timeout = \"0s\"\n",
                "encoding.schema_registry.request_timeout",
            ),
        ] {
            let e = load(&format!("{base}{extra}"), t).unwrap_err();
            assert!(e.to_string().contains(key), "{extra:?} names {key}: {e}");
        }
    }

    #[test]
    fn bad_urls_and_templates_are_rejected_by_key() {
        let t = &[("TELAVOX_TOKEN", "x")];
        assert_eq!(
            load("[upstream]\nlive_url = \"http://x\"\n", t)
                .unwrap_err()
                .key(),
            Some("upstream.live_url")
        );
        assert_eq!(
            load("[upstream]\nlive_url = \"not a url\"\n", t)
                .unwrap_err()
                .key(),
            Some("upstream.live_url")
        );
        assert_eq!(
            load("[sink]\ntopic_template = \"a.{nope}\"\n", t)
                .unwrap_err()
                .key(),
            Some("sink.topic_template")
        );
        assert_eq!(
            load("[sink]\ntopic_template = \"a b.{source}\"\n", t)
                .unwrap_err()
                .key(),
            Some("sink.topic_template")
        );
        assert_eq!(
            load("[sink]\ntopic_template = \"fixed\"\n", t)
                .unwrap_err()
                .key(),
            Some("sink.topic_template")
        );
    }

    #[test]
    fn checkpoint_keys_are_checked_by_key() {
        let t = &[("TELAVOX_TOKEN", "x")];
        let c = load("", t).unwrap();
        assert_eq!(c.relay.checkpoint, CheckpointMode::Broker);
        assert_eq!(c.relay.checkpoint_key, "studio-relay");
        let c = load(
            "[relay]\ncheckpoint = \"file\"\ncheckpoint_file = \"/tmp/cp.json\"\n",
            t,
        )
        .unwrap();
        assert_eq!(c.relay.checkpoint, CheckpointMode::File);
        // A file that would be silently ignored, or missing where needed.
        for text in [
            "[relay]\ncheckpoint_file = \"/tmp/cp.json\"\n",
            "[relay]\ncheckpoint = \"off\"\ncheckpoint_file = \"/tmp/cp.json\"\n",
            "[relay]\ncheckpoint = \"file\"\n",
        ] {
            assert_eq!(
                load(text, t).unwrap_err().key(),
                Some("relay.checkpoint_file"),
                "{text}"
            );
        }
        assert_eq!(
            load("[relay]\ncheckpoint = \"kv\"\n", t).unwrap_err().key(),
            Some("relay.checkpoint")
        );
        assert_eq!(
            load("[relay]\ncheckpoint_store = \"a.b\"\n", t)
                .unwrap_err()
                .key(),
            Some("relay.checkpoint_store")
        );
        for key in ["", ".x", "a b", "a/b"] {
            let text = format!("[relay]\ncheckpoint_key = {key:?}\n");
            assert_eq!(
                load(&text, t).unwrap_err().key(),
                Some("relay.checkpoint_key"),
                "{key:?}"
            );
        }
    }

    #[test]
    fn redacted_output_has_no_secrets() {
        let c = load(
            "[sink.kafka.properties]\n\"sasl.password\" = \"hunter2\"\n[sink.nats]\nurl = \"nats://u:pw@127.0.0.1:4222\"\n",
            &[("TELAVOX_TOKEN", "sekrit-token")],
        )
        .unwrap();
        let out = c.redacted_toml();
        for s in ["sekrit-token", "hunter2", "pw@"] {
            assert!(!out.contains(s), "{s} leaked:\n{out}");
        }
        assert!(!format!("{c:?}").contains("sekrit-token"));
    }
}
