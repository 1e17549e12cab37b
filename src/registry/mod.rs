//! Confluent-compatible Schema Registry (Confluent, or Apicurio's
//! `/apis/ccompat/v7`): at start-up, each source's Avro schema is checked
//! against, registered under or looked up in `<topic>-value`
//! (TopicNameStrategy), and the ids go to the (pure) encoder. The only I/O on
//! the encoding side.
//!
//! Ids are kept per (tenant, source): registries that give one id per schema
//! text (Confluent; Apicurio's default content ids) return the same id for
//! every tenant's subject, while Apicurio's legacy id mode numbers each
//! subject's versions separately.

pub mod client;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use client::{Compatibility, RegistryClient};

use crate::config::{Config, EncodingFormat, RegistryMode, SchemaRegistryConfig};
use crate::encode::{self, Encoder};
use crate::model::DataSource;
use crate::ops::internal_events::{SchemaIdResolved, SchemaIdsResolved};
use crate::ops::Metrics;

/// Why the registry could not give the relay its schema ids. Each message
/// is one line naming the subject or key and what to do.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("subject {subject}: the registry refused the relay's schema as incompatible with the registered versions ({message}); register a compatible version or change the subject's compatibility level")]
    Incompatible { subject: String, message: String },
    #[error("subject {subject}: the relay's schema is not compatible with the subject's latest version under its compatibility level{detail}; register a compatible version, change the subject's compatibility level, or set encoding.schema_registry.check_compatibility = false")]
    IncompatibleWithLatest { subject: String, detail: String },
    #[error("subject {subject}: the registry says the relay's schema is invalid: {message}")]
    Invalid { subject: String, message: String },
    #[error("subject {subject} has no version with the relay's {data_source} schema, and encoding.schema_registry.mode = \"lookup\" never registers: register schemas/avro/{file} under {subject}, or set mode = \"register\"")]
    NotFound {
        subject: String,
        data_source: &'static str,
        file: String,
    },
    #[error("the registry at {url} refused the credentials (HTTP {status}): check encoding.schema_registry.username and password")]
    Unauthorized { url: String, status: u16 },
    #[error("config key `encoding.schema_registry.ca_file`: cannot use {path} as a CA: {message}")]
    CaFile { path: String, message: String },
    #[error("TLS with the registry failed ({0}); if its certificate is signed by a private CA, set encoding.schema_registry.ca_file")]
    Tls(String),
    #[error("subject {subject}: the registry answered HTTP {status}: {message}")]
    Http {
        status: u16,
        subject: String,
        message: String,
    },
    #[error("cannot reach the registry: {0}")]
    Network(String),
    #[error("the registry at {url} was still unavailable after {after:?} (encoding.schema_registry.retry_for): {last}")]
    GaveUp {
        url: String,
        after: Duration,
        last: String,
    },
    #[error("stopped while waiting for the schema registry")]
    Interrupted,
}

impl RegistryError {
    /// Worth another try: the registry may be starting, overloaded or failing.
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Network(_) => true,
            RegistryError::Http { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            _ => false,
        }
    }

    /// The process exit code: 2 when the configuration or the registry's
    /// content must change first (credentials, CA, subjects, compatibility),
    /// 130 when interrupted, 1 when the registry failed or stayed unavailable.
    pub fn exit_code(&self) -> u8 {
        match self {
            RegistryError::Incompatible { .. }
            | RegistryError::IncompatibleWithLatest { .. }
            | RegistryError::Invalid { .. }
            | RegistryError::NotFound { .. }
            | RegistryError::Unauthorized { .. }
            | RegistryError::CaFile { .. }
            | RegistryError::Tls(_) => 2,
            RegistryError::Http { status, .. } if *status < 500 && !self.is_retryable() => 2,
            RegistryError::Interrupted => 130,
            _ => 1,
        }
    }
}

/// The encoder for this configuration: with a registry, every (tenant,
/// source) subject is resolved first and a refusal stops start-up.
pub async fn encoder_for(
    config: &Config,
    tenants: &[&str],
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<Encoder, RegistryError> {
    let registry = match (&config.encoding.format, &config.encoding.schema_registry) {
        (EncodingFormat::Avro, Some(r)) => r,
        (format, _) => return Ok(Encoder::new(*format, None)),
    };
    let started = Instant::now();
    let client = RegistryClient::new(registry)?;
    let resolver = Resolver {
        client: &client,
        config: registry,
        deadline: started + registry.retry_for,
        shutdown,
        metrics,
    };
    // Tenants share a subject when the topic template has no `{tenant}`.
    let mut by_subject: BTreeMap<String, u32> = BTreeMap::new();
    let mut ids: HashMap<String, HashMap<DataSource, u32>> = HashMap::new();
    for &source in &DataSource::ALL {
        let schema = encode::avro_schema_json(source);
        for &tenant in tenants {
            let subject = subject_for(config, source, tenant);
            let id = match by_subject.get(&subject) {
                Some(&id) => id,
                None => {
                    let id = resolver.resolve(&subject, source, &schema).await?;
                    by_subject.insert(subject, id);
                    id
                }
            };
            ids.entry(tenant.to_string())
                .or_default()
                .insert(source, id);
        }
    }
    let mut distinct: Vec<u32> = by_subject.values().copied().collect();
    distinct.sort_unstable();
    distinct.dedup();
    SchemaIdsResolved {
        url: client.shown_url(),
        mode: registry.mode.as_str(),
        subjects: by_subject.len(),
        ids: distinct.len(),
        compatibility_checked: registry.check_compatibility,
        elapsed: started.elapsed(),
    }
    .emit(metrics);
    Ok(encoder_with_ids(ids))
}

/// The subject of a source's values for a tenant (TopicNameStrategy).
pub fn subject_for(config: &Config, source: DataSource, tenant: &str) -> String {
    let topic = encode::destination(
        &config.sink.topic_template,
        source,
        encode::SCHEMA_VERSION,
        tenant,
    );
    format!("{topic}-value")
}

/// One Avro encoder for all tenants: a single id table when every tenant got
/// the same ids (the usual case), per-tenant tables otherwise.
fn encoder_with_ids(ids: HashMap<String, HashMap<DataSource, u32>>) -> Encoder {
    let shared = ids.values().next().cloned().unwrap_or_default();
    if ids.values().all(|t| *t == shared) {
        Encoder::new(EncodingFormat::Avro, Some(shared))
    } else {
        Encoder::new(EncodingFormat::Avro, Some(shared)).with_tenant_registry_ids(ids)
    }
}

/// Everything one start-up's requests share: the retry deadline, the stop signal.
struct Resolver<'a> {
    client: &'a RegistryClient,
    config: &'a SchemaRegistryConfig,
    deadline: Instant,
    shutdown: &'a CancellationToken,
    metrics: &'a Metrics,
}

impl Resolver<'_> {
    /// The id of `schema` under `subject`, after the compatibility check.
    async fn resolve(
        &self,
        subject: &str,
        source: DataSource,
        schema: &str,
    ) -> Result<u32, RegistryError> {
        let client = self.client;
        if self.config.check_compatibility {
            let verdict = self
                .retrying(subject, || client.check_compatibility(subject, schema))
                .await?;
            if let Compatibility::Incompatible { messages } = verdict {
                return Err(RegistryError::IncompatibleWithLatest {
                    subject: subject.into(),
                    detail: if messages.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", messages.join("; "))
                    },
                });
            }
        }
        let (id, action) = match self.config.mode {
            RegistryMode::Register => (
                self.retrying(subject, || client.register(subject, schema))
                    .await?,
                "registered",
            ),
            RegistryMode::Lookup => {
                let found = self
                    .retrying(subject, || client.lookup(subject, schema))
                    .await?;
                let id = found.ok_or_else(|| RegistryError::NotFound {
                    subject: subject.into(),
                    data_source: source.as_str(),
                    file: format!("{}.v{}.avsc", source.as_str(), encode::SCHEMA_VERSION),
                })?;
                (id, "found")
            }
        };
        SchemaIdResolved {
            subject,
            id,
            action,
        }
        .emit(self.metrics);
        Ok(id)
    }

    async fn retrying<T, Fut>(
        &self,
        subject: &str,
        request: impl FnMut() -> Fut,
    ) -> Result<T, RegistryError>
    where
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        self.client
            .retrying(subject, self.deadline, self.shutdown, self.metrics, request)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Envelope, Origin};

    fn ids(pairs: &[(DataSource, u32)]) -> HashMap<DataSource, u32> {
        pairs.iter().copied().collect()
    }

    fn header_id(encoder: &Encoder, env: &Envelope) -> u32 {
        let bytes = encoder.encode(env).unwrap().bytes;
        assert_eq!(bytes[0], 0, "Confluent magic byte");
        u32::from_be_bytes(bytes[1..5].try_into().unwrap())
    }

    fn envelope(tenant: &str) -> Envelope {
        let record =
            crate::model::normalize_live(DataSource::Calls, br#"{"id_call":"c-1"}"#).unwrap();
        Envelope::new(tenant.into(), Origin::Live, 0, record)
    }

    #[test]
    fn each_tenant_gets_the_id_of_its_own_subject() {
        let per_tenant = HashMap::from([
            ("acme".to_string(), ids(&[(DataSource::Calls, 7)])),
            ("globex".to_string(), ids(&[(DataSource::Calls, 9)])),
        ]);
        let encoder = encoder_with_ids(per_tenant);
        assert_eq!(header_id(&encoder, &envelope("acme")), 7);
        assert_eq!(header_id(&encoder, &envelope("globex")), 9);
    }

    #[test]
    fn tenants_sharing_ids_share_one_table() {
        let per_tenant = HashMap::from([
            ("acme".to_string(), ids(&[(DataSource::Calls, 4)])),
            ("globex".to_string(), ids(&[(DataSource::Calls, 4)])),
        ]);
        let encoder = encoder_with_ids(per_tenant);
        assert_eq!(header_id(&encoder, &envelope("acme")), 4);
        assert_eq!(header_id(&encoder, &envelope("globex")), 4);
    }

    #[test]
    fn configuration_problems_exit_2_and_outages_exit_1() {
        let not_found = RegistryError::NotFound {
            subject: "telavox.studio.calls.v1-value".into(),
            data_source: "calls",
            file: "calls.v1.avsc".into(),
        };
        assert_eq!(not_found.exit_code(), 2);
        assert!(not_found
            .to_string()
            .contains("subject telavox.studio.calls.v1-value"));
        assert_eq!(
            RegistryError::Unauthorized {
                url: "http://r".into(),
                status: 401
            }
            .exit_code(),
            2
        );
        let gave_up = RegistryError::GaveUp {
            url: "http://r".into(),
            after: Duration::from_secs(1),
            last: "connection refused".into(),
        };
        assert_eq!(gave_up.exit_code(), 1);
        for status in [500, 503, 429, 408] {
            let e = RegistryError::Http {
                status,
                subject: "s".into(),
                message: String::new(),
            };
            assert!(e.is_retryable(), "HTTP {status} is retried");
        }
        let e = RegistryError::Http {
            status: 404,
            subject: "s".into(),
            message: String::new(),
        };
        assert!(!e.is_retryable());
        assert_eq!(e.exit_code(), 2);
    }
}
