//! Confluent Schema Registry client: registers each source's Avro schema under
//! `<topic>-value` (TopicNameStrategy) at start-up and hands the ids to the
//! (pure) encoder. The only I/O on the encoding side.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::{Config, EncodingFormat, SchemaRegistryConfig};
use crate::encode::{self, Encoder};
use crate::model::DataSource;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A registry refusal or failure, with the registry's own message.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("the registry refused the schema for subject {subject} as incompatible with the registered versions: {message}")]
    Incompatible { subject: String, message: String },
    #[error("the registry says the schema for subject {subject} is invalid: {message}")]
    Invalid { subject: String, message: String },
    #[error("the registry refused our credentials (HTTP {status})")]
    Unauthorized { status: u16 },
    #[error("registry answered HTTP {status} for subject {subject}: {message}")]
    Http {
        status: u16,
        subject: String,
        message: String,
    },
    #[error("cannot reach the registry: {0}")]
    Network(String),
}

impl RegistryError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, RegistryError::Network(_))
            || matches!(self, RegistryError::Http { status, .. } if *status >= 500)
    }
}

/// A small client for the REST subset the relay uses.
pub struct RegistryClient {
    http: reqwest::Client,
    config: SchemaRegistryConfig,
}

impl RegistryClient {
    pub fn new(config: &SchemaRegistryConfig) -> Result<Self, RegistryError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| RegistryError::Network(e.to_string()))?;
        Ok(RegistryClient {
            http,
            config: config.clone(),
        })
    }

    /// Registers (or finds) `schema` under `subject` and returns its global id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let url = format!(
            "{}/subjects/{}/versions",
            self.config.url.trim_end_matches('/'),
            subject
        );
        let mut req = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .json(&serde_json::json!({ "schema": schema, "schemaType": "AVRO" }));
        if let Some(user) = &self.config.username {
            req = req.basic_auth(
                user,
                self.config
                    .password
                    .as_ref()
                    .map(|p| p.expose().to_string()),
            );
        }
        let resp = req
            .send()
            .await
            .map_err(|e| RegistryError::Network(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        let message = body
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("")
            .to_string();
        match status {
            200..=299 => body
                .get("id")
                .and_then(|i| i.as_u64())
                .map(|i| i as u32)
                .ok_or_else(|| RegistryError::Http {
                    status,
                    subject: subject.into(),
                    message: "response has no id".into(),
                }),
            401 | 403 => Err(RegistryError::Unauthorized { status }),
            409 => Err(RegistryError::Incompatible {
                subject: subject.into(),
                message,
            }),
            422 => Err(RegistryError::Invalid {
                subject: subject.into(),
                message,
            }),
            _ => Err(RegistryError::Http {
                status,
                subject: subject.into(),
                message,
            }),
        }
    }
}

/// The encoder for this configuration: with a registry, every (tenant,
/// source) subject is registered first and a refusal stops start-up.
pub async fn encoder_for(config: &Config, tenants: &[&str]) -> Result<Encoder, RegistryError> {
    let registry = match (&config.encoding.format, &config.encoding.schema_registry) {
        (EncodingFormat::Avro, Some(r)) => r,
        (format, _) => return Ok(Encoder::new(*format, None)),
    };
    let client = RegistryClient::new(registry)?;
    let mut ids: HashMap<DataSource, u32> = HashMap::new();
    for &source in &DataSource::ALL {
        let schema = encode::avro_schema_json(source);
        for tenant in tenants {
            let topic = encode::destination(
                &config.sink.topic_template,
                source,
                encode::SCHEMA_VERSION,
                tenant,
            );
            let id = client.register(&format!("{topic}-value"), &schema).await?;
            // The same schema text has one global id, whatever the subject.
            ids.insert(source, id);
        }
    }
    tracing::info!(
        subjects = ids.len() * tenants.len(),
        "Avro schemas registered"
    );
    Ok(Encoder::new(EncodingFormat::Avro, Some(ids)))
}
