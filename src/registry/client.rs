//! The HTTP side: the Confluent REST subset the relay uses, basic auth, a
//! private CA, and bounded retries with exponential backoff.

use std::future::Future;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::RegistryError;
use crate::config::{redact_url, SchemaRegistryConfig};
use crate::ops::internal_events::SchemaRegistryRequestRetried;
use crate::ops::Metrics;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(200);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// What the registry says about a schema against a subject's latest version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compatibility {
    /// The subject has no versions yet: nothing to be compatible with.
    NoVersions,
    Compatible,
    Incompatible {
        messages: Vec<String>,
    },
}

/// An answer with its status, before it is judged.
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    fn message(&self) -> String {
        match self.body.get("message").and_then(Value::as_str) {
            Some(m) => m.to_string(),
            None if self.body.is_null() => String::new(),
            None => self.body.to_string(),
        }
    }

    /// Confluent's `error_code` (40401 subject not found, 40403 schema not found, ...).
    fn error_code(&self) -> Option<u64> {
        self.body.get("error_code").and_then(Value::as_u64)
    }

    /// A 404 from the registry API itself (with a 404xx error code), as
    /// opposed to a URL outside it.
    fn is_registry_not_found(&self) -> bool {
        self.error_code()
            .is_some_and(|c| (40400..40500).contains(&c))
    }
}

/// A client for one registry, with a retry budget shared by every request of
/// a start-up.
pub struct RegistryClient {
    http: reqwest::Client,
    base: url::Url,
    /// For logs and errors: the URL with credentials redacted.
    shown_url: String,
    username: Option<String>,
    password: Option<String>,
    retry_for: Duration,
}

impl RegistryClient {
    pub fn new(config: &SchemaRegistryConfig) -> Result<Self, RegistryError> {
        let mut builder = reqwest::Client::builder().timeout(config.request_timeout);
        if let Some(path) = &config.ca_file {
            let ca_error = |message: String| RegistryError::CaFile {
                path: path.display().to_string(),
                message,
            };
            let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_error("no PEM certificate in the file".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| RegistryError::Network(crate::ops::logging::error_chain(&e)))?;
        let base =
            url::Url::parse(&config.url).map_err(|e| RegistryError::Network(e.to_string()))?;
        Ok(RegistryClient {
            http,
            base,
            shown_url: redact_url(&config.url),
            username: config.username.clone(),
            password: config.password.as_ref().map(|p| p.expose().to_string()),
            retry_for: config.retry_for,
        })
    }

    /// The registry URL with credentials redacted.
    pub fn shown_url(&self) -> &str {
        &self.shown_url
    }

    /// How long start-up may keep retrying.
    pub fn retry_for(&self) -> Duration {
        self.retry_for
    }

    /// Registers `schema` under `subject` (an equal version already there is
    /// reused) and returns its id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let answer = self
            .post(&["subjects", subject, "versions"], schema)
            .await?;
        match answer.status.as_u16() {
            200..=299 => schema_id(&answer, subject),
            409 => Err(RegistryError::Incompatible {
                subject: subject.into(),
                message: answer.message(),
            }),
            422 => Err(RegistryError::Invalid {
                subject: subject.into(),
                message: answer.message(),
            }),
            _ => Err(self.refusal(&answer, subject)),
        }
    }

    /// Finds the id of `schema` among the versions of `subject`, never
    /// writing. `Ok(None)`: the subject or that schema is not there.
    pub async fn lookup(&self, subject: &str, schema: &str) -> Result<Option<u32>, RegistryError> {
        let answer = self.post(&["subjects", subject], schema).await?;
        match answer.status.as_u16() {
            200..=299 => schema_id(&answer, subject).map(Some),
            404 if answer.is_registry_not_found() => Ok(None),
            _ => Err(self.refusal(&answer, subject)),
        }
    }

    /// Asks whether `schema` is compatible with the latest version of
    /// `subject` under the subject's compatibility level.
    pub async fn check_compatibility(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<Compatibility, RegistryError> {
        let answer = self
            .post(
                &["compatibility", "subjects", subject, "versions", "latest"],
                schema,
            )
            .await?;
        match answer.status.as_u16() {
            200..=299 => match answer.body.get("is_compatible").and_then(Value::as_bool) {
                Some(true) => Ok(Compatibility::Compatible),
                Some(false) => Ok(Compatibility::Incompatible {
                    messages: answer
                        .body
                        .get("messages")
                        .and_then(Value::as_array)
                        .map(|m| {
                            m.iter()
                                .map(|x| x.as_str().map_or_else(|| x.to_string(), String::from))
                                .collect()
                        })
                        .unwrap_or_default(),
                }),
                None => Err(RegistryError::Http {
                    status: answer.status.as_u16(),
                    subject: subject.into(),
                    message: "the compatibility answer has no is_compatible".into(),
                }),
            },
            // Subject (40401) or version (40402) not found.
            404 if answer.is_registry_not_found() => Ok(Compatibility::NoVersions),
            _ => Err(self.refusal(&answer, subject)),
        }
    }

    /// Runs `request` until it succeeds, fails for good, the retry budget
    /// that ends at `deadline` is spent, or `shutdown` is cancelled.
    pub async fn retrying<T, F, Fut>(
        &self,
        subject: &str,
        deadline: Instant,
        shutdown: &CancellationToken,
        metrics: &Metrics,
        mut request: F,
    ) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let mut delay = FIRST_RETRY_DELAY;
        let mut attempt = 0;
        loop {
            let error = match request().await {
                Err(e) if e.is_retryable() => e,
                other => return other,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RegistryError::GaveUp {
                    url: self.shown_url.clone(),
                    after: self.retry_for,
                    last: error.to_string(),
                });
            }
            attempt += 1;
            let wait = delay.min(left);
            SchemaRegistryRequestRetried {
                url: &self.shown_url,
                subject,
                attempt,
                delay: wait,
                error: &error.to_string(),
            }
            .emit(metrics);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return Err(RegistryError::Interrupted),
            }
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
    }

    async fn post(&self, path: &[&str], schema: &str) -> Result<Answer, RegistryError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| {
                RegistryError::Network(format!("{} cannot be a base URL", self.shown_url))
            })?
            .pop_if_empty()
            .extend(path);
        // `normalize`: the registry compares schemas by their canonical form,
        // so a version registered from a pretty-printed `.avsc` file is the
        // same schema as the compact text the relay sends.
        url.query_pairs_mut().append_pair("normalize", "true");
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(reqwest::header::ACCEPT, CONTENT_TYPE)
            .json(&json!({ "schema": schema, "schemaType": "AVRO" }));
        if let Some(user) = &self.username {
            request = request.basic_auth(user, self.password.as_ref());
        }
        let response = request.send().await.map_err(classify)?;
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        let answer = Answer { status, body };
        match status.as_u16() {
            401 | 403 => Err(RegistryError::Unauthorized {
                url: self.shown_url.clone(),
                status: status.as_u16(),
            }),
            _ => Ok(answer),
        }
    }

    fn refusal(&self, answer: &Answer, subject: &str) -> RegistryError {
        let mut message = answer.message();
        if let Some(code) = answer.error_code() {
            message = format!("{message} (error_code {code})");
        } else if answer.status == StatusCode::NOT_FOUND {
            message = format!(
                "no registry API at {}: encoding.schema_registry.url must be the Confluent-compatible base URL (Apicurio: .../apis/ccompat/v7)",
                self.shown_url
            );
        }
        RegistryError::Http {
            status: answer.status.as_u16(),
            subject: subject.into(),
            message,
        }
    }
}

fn schema_id(answer: &Answer, subject: &str) -> Result<u32, RegistryError> {
    answer
        .body
        .get("id")
        .and_then(Value::as_u64)
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| RegistryError::Http {
            status: answer.status.as_u16(),
            subject: subject.into(),
            message: format!("the answer has no 32-bit schema id: {}", answer.body),
        })
}

/// A transport failure: TLS that cannot be trusted is a configuration
/// problem that no retry fixes; anything else (refused, reset, timed out)
/// may pass.
fn classify(e: reqwest::Error) -> RegistryError {
    let e = e.without_url();
    let text = crate::ops::logging::error_chain(&e);
    if e.is_connect() && is_tls_failure(&e) {
        RegistryError::Tls(text)
    } else {
        RegistryError::Network(text)
    }
}

/// The TLS stack reports a certificate it cannot verify (or any handshake
/// failure) as an `InvalidData` I/O error, which the connector wraps in
/// another I/O error (whose `source` skips the inner one, hence `get_ref`).
fn is_tls_failure(e: &reqwest::Error) -> bool {
    let mut next = std::error::Error::source(e);
    while let Some(err) = next {
        match err.downcast_ref::<std::io::Error>() {
            Some(io) if io.kind() == std::io::ErrorKind::InvalidData => return true,
            Some(io) => match io.get_ref() {
                Some(inner) => next = Some(inner as &(dyn std::error::Error + 'static)),
                None => next = err.source(),
            },
            None => next = err.source(),
        }
    }
    false
}
