//! Pure: envelope → [`OutboundMessage`] (destination, key, headers, payload),
//! and raw bad input → dead-letter message. Shared by `run` and `replay`, so
//! both publish byte-identical messages for the same record.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::config::{EncodingFormat, SinkConfig};
use crate::encode::{self, EncodeError, Encoder};
use crate::model::{DataSource, Envelope};
use crate::sink::OutboundMessage;

/// Header names added to dead letters (besides the CloudEvents ones).
pub const DL_REASON: &str = "studio_relay_reason";
pub const DL_ERROR: &str = "studio_relay_error";
pub const DL_TENANT: &str = "studio_relay_tenant";
pub const DL_SOURCE: &str = "studio_relay_source";
pub const DL_PAYLOAD_BYTES: &str = "studio_relay_payload_bytes";
pub const DL_TRUNCATED: &str = "studio_relay_truncated";
/// On the dead letter of one element of a batch frame (a JSON array of
/// records): the element's index, counted from 0. Its payload is that
/// element's bytes; the frame's other elements were relayed on their own.
pub const DL_ELEMENT_INDEX: &str = "studio_relay_element_index";

/// Marks a dead letter as element `index` of a batch frame.
pub fn mark_element(m: &mut OutboundMessage, index: usize) {
    m.headers
        .push((DL_ELEMENT_INDEX.into(), index.to_string().into()));
}

/// Cuts a dead letter's payload so that the whole message is at most
/// `max_bytes` ([`OutboundMessage::size`]) and marks it truncated; its
/// `studio_relay_payload_bytes` keeps the size it had before. A dead letter
/// the broker refuses for its size would lose the incident altogether,
/// while its head and headers still say what happened.
pub fn fit_dead_letter(m: &mut OutboundMessage, max_bytes: usize) {
    if m.size() <= max_bytes {
        return;
    }
    let marked = m.headers.iter().any(|(k, _)| k == DL_TRUNCATED);
    let mark = if marked {
        0
    } else {
        crate::sink::header_size(DL_TRUNCATED, "true")
    };
    let rest = m.size() - m.payload.len() + mark;
    m.payload = m
        .payload
        .slice(..max_bytes.saturating_sub(rest).min(m.payload.len()));
    if !marked {
        m.headers.push((DL_TRUNCATED.into(), "true".into()));
    }
}

/// Builds every message the relay publishes.
pub struct MessageBuilder {
    encoder: Encoder,
    deadletter_topic: String,
    deadletter_max_bytes: usize,
    control_topic: String,
    dead_letters: AtomicU64,
    /// Per source: the topic template with `{source}` and `{version}`
    /// filled, split at `{tenant}` (joining the pieces with the tenant is
    /// what the third `replace` of [`encode::destination`] does).
    destination_parts: Vec<Vec<String>>,
}

impl MessageBuilder {
    pub fn new(encoder: Encoder, sink: &SinkConfig) -> Self {
        MessageBuilder {
            encoder,
            deadletter_topic: sink.deadletter_topic.clone(),
            deadletter_max_bytes: sink.deadletter_max_bytes,
            control_topic: sink.control_topic.clone(),
            dead_letters: AtomicU64::new(0),
            destination_parts: DataSource::ALL
                .iter()
                .map(|s| {
                    sink.topic_template
                        .replace("{source}", s.as_str())
                        .replace("{version}", &encode::SCHEMA_VERSION.to_string())
                        .split("{tenant}")
                        .map(String::from)
                        .collect()
                })
                .collect(),
        }
    }

    /// Convenience for callers without a registry.
    pub fn without_registry(format: EncodingFormat, sink: &SinkConfig) -> Self {
        Self::new(Encoder::new(format, None), sink)
    }

    /// The topic/subject of a record of `source` for `tenant`.
    pub fn destination(&self, source: DataSource, tenant: &str) -> String {
        self.destination_parts[source.index()].join(tenant)
    }

    /// Every destination `tenants` × `sources` can publish to, plus the dead-letter one.
    pub fn all_destinations<'a>(
        &self,
        tenants: impl IntoIterator<Item = &'a str>,
        sources: &[DataSource],
    ) -> Vec<String> {
        let mut out: Vec<String> = tenants
            .into_iter()
            .flat_map(|t| sources.iter().map(move |s| (t, *s)))
            .map(|(t, s)| self.destination(s, t))
            .collect();
        out.push(self.deadletter_topic.clone());
        out.push(self.control_topic.clone());
        out.sort();
        out.dedup();
        out
    }

    pub fn deadletter_topic(&self) -> &str {
        &self.deadletter_topic
    }

    /// Encodes one envelope into a message ready for the sink.
    pub fn build(&self, env: &Envelope) -> Result<OutboundMessage, EncodeError> {
        let encoded = self.encoder.encode(env)?;
        Ok(OutboundMessage {
            destination: self.destination(env.source, &env.tenant),
            key: env.record.partition_key(),
            headers: encode::cloudevents_headers(env, encoded.content_type),
            payload: Bytes::from(encoded.bytes),
            event_id: env.event_id.to_string(),
        })
    }

    /// A dead letter: the raw payload as received, plus why it was refused.
    /// Each dead letter gets its own id (two identical bad frames are two
    /// incidents, and JetStream must not deduplicate them).
    pub fn dead_letter(
        &self,
        tenant: &str,
        source: DataSource,
        reason: &str,
        error: &str,
        received_at_ms: i64,
        raw: Bytes,
    ) -> OutboundMessage {
        let seq = self.dead_letters.fetch_add(1, Ordering::Relaxed);
        let mut h = Sha256::new();
        h.update(tenant.as_bytes());
        h.update(source.as_str().as_bytes());
        h.update(received_at_ms.to_le_bytes());
        h.update(seq.to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        h.update(&raw);
        let id = format!("dl-{}", &hex::encode(h.finalize())[..32]);
        let time = chrono::DateTime::from_timestamp_millis(received_at_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        // Header values must be valid, bounded text.
        let error: String = error
            .chars()
            .filter(|c| !c.is_control())
            .take(1024)
            .collect();
        let size = raw.len();
        let mut headers = vec![
            ("ce_specversion".into(), "1.0".into()),
            ("ce_id".into(), id.clone().into()),
            ("ce_type".into(), "com.telavox.studio.deadletter".into()),
            (
                "ce_source".into(),
                format!("telavox-studio/{tenant}/{source}").into(),
            ),
            ("ce_time".into(), time.into()),
            ("content-type".into(), "application/octet-stream".into()),
            (DL_REASON.into(), reason.to_owned().into()),
            (DL_ERROR.into(), error.into()),
            (DL_TENANT.into(), tenant.to_owned().into()),
            (DL_SOURCE.into(), source.as_str().into()),
            (DL_PAYLOAD_BYTES.into(), size.to_string().into()),
        ];
        // A dead letter the broker refuses for its size would lose the
        // incident altogether: keep the head, and say that it is one.
        let payload = if size > self.deadletter_max_bytes {
            headers.push((DL_TRUNCATED.into(), "true".into()));
            raw.slice(..self.deadletter_max_bytes)
        } else {
            raw
        };
        OutboundMessage {
            destination: self.deadletter_topic.clone(),
            key: Some(format!("{tenant}/{source}")),
            headers,
            payload,
            event_id: id,
        }
    }

    /// A gap marker on the control topic: `source` of `tenant` was not
    /// received live over `[from_ms, to_ms]` (upstream time) and has no
    /// historic layer to fill it from. Same gap, same id (JetStream dedupes).
    pub fn gap_marker(
        &self,
        tenant: &str,
        source: DataSource,
        from_ms: i64,
        to_ms: i64,
    ) -> OutboundMessage {
        let iso = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        let mut h = Sha256::new();
        h.update(format!("gap\n{tenant}\n{source}\n{from_ms}\n{to_ms}").as_bytes());
        let id = format!("gap-{}", &hex::encode(h.finalize())[..32]);
        let payload = serde_json::json!({
            "type": "gap",
            "tenant": tenant,
            "source": source.as_str(),
            "from": iso(from_ms),
            "to": iso(to_ms),
            "from_ms": from_ms,
            "to_ms": to_ms,
            "reason": "socket down; this source has no historic layer to backfill from",
        });
        OutboundMessage {
            destination: self.control_topic.clone(),
            key: Some(format!("{tenant}/{source}")),
            headers: vec![
                ("ce_specversion".into(), "1.0".into()),
                ("ce_id".into(), id.clone().into()),
                ("ce_type".into(), "com.telavox.studio.gap".into()),
                (
                    "ce_source".into(),
                    format!("telavox-studio/{tenant}/{source}").into(),
                ),
                ("ce_time".into(), iso(to_ms).into()),
                ("content-type".into(), "application/json".into()),
            ],
            payload: Bytes::from(payload.to_string()),
            event_id: id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(m: &'a OutboundMessage, name: &str) -> Option<&'a str> {
        m.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }

    #[test]
    fn a_dead_letter_is_cut_to_fit_and_keeps_its_original_size() {
        let b = MessageBuilder::without_registry(EncodingFormat::Json, &SinkConfig::default());
        let raw = Bytes::from(vec![b'x'; 300_000]);
        let mut dl = b.dead_letter("acme", DataSource::Calls, "too_large", "big", 0, raw);
        assert_eq!(header(&dl, DL_TRUNCATED), None);
        fit_dead_letter(&mut dl, 100_000);
        assert_eq!(dl.size(), 100_000, "as large as fits");
        assert!(dl.payload.iter().all(|&c| c == b'x'));
        assert_eq!(header(&dl, DL_TRUNCATED), Some("true"));
        assert_eq!(header(&dl, DL_PAYLOAD_BYTES), Some("300000"));
        // Cut again (a lower limit found later): marked once.
        fit_dead_letter(&mut dl, 50_000);
        assert_eq!(dl.size(), 50_000);
        let marks = dl.headers.iter().filter(|(k, _)| k == DL_TRUNCATED).count();
        assert_eq!(marks, 1);
        // Already small enough: untouched.
        let before = dl.payload.clone();
        fit_dead_letter(&mut dl, 60_000);
        assert_eq!(dl.payload, before);
    }

    #[test]
    fn destinations_are_the_filled_templates() {
        for template in [
            "telavox.studio.{source}.v{version}",
            "t.{tenant}.{source}.{tenant}",
            "{tenant}{tenant}",
            "{ten{version}ant}.{source",
            "plain",
            "",
        ] {
            let sink = SinkConfig {
                topic_template: template.into(),
                ..SinkConfig::default()
            };
            let b = MessageBuilder::without_registry(EncodingFormat::Json, &sink);
            for source in DataSource::ALL {
                for tenant in ["acme", "", "{tenant}", "{source}", "a.b"] {
                    assert_eq!(
                        b.destination(source, tenant),
                        encode::destination(template, source, encode::SCHEMA_VERSION, tenant),
                        "{template} {source} {tenant}"
                    );
                }
            }
        }
    }
}
