//! One live frame → the messages to publish: its record (or each record of
//! a batch frame, a JSON array or newline-delimited values), or dead letters.
//! Normalizing and encoding happen here; nothing here can fail the caller.

use std::sync::Arc;

use crate::model::{self, Envelope};
use crate::ops::internal_events::{PartialPushReceived, UnknownFieldsKept};
use crate::ops::Metrics;
use crate::publish::dead_letter::DeadLetter;
use crate::publish::message_builder::MessageBuilder;
use crate::publish::outgoing::Outgoing;
use crate::upstream::live::{FramePayload, LiveFrame};

/// Hands each message made from `frame` to `out`, in order, with the
/// record's own time for the upstream clock (when it holds a record). The
/// caller observes the clock, in arrival order.
pub fn prepare_frame(
    frame: LiveFrame,
    builder: &MessageBuilder,
    metrics: &Metrics,
    out: &mut impl FnMut(Outgoing, Option<i64>),
) {
    let LiveFrame {
        tenant,
        source,
        received_at_ms,
        received,
        payload,
    } = frame;
    let frame = FrameContext {
        tenant: &tenant,
        source,
        received_at_ms,
        builder,
        metrics,
    };
    let text = match payload {
        FramePayload::Text(b) => b,
        FramePayload::Binary(b) => {
            let error = "binary WebSocket frame; the Studio API sends JSON text";
            out(frame.dead("binary_frame", error, b, None), None);
            return;
        }
        FramePayload::Oversized { head, len } => {
            let error = format!(
                "frame of {len} bytes exceeds upstream.max_frame_bytes; first {} bytes kept",
                head.len()
            );
            out(frame.dead("oversized_frame", &error, head, None), None);
            return;
        }
    };
    let elements = |values: Vec<&str>, out: &mut dyn FnMut(Outgoing, Option<i64>)| {
        let whole: bytes::Bytes = text.clone().into();
        for (i, element) in values.into_iter().enumerate() {
            let raw = || whole.slice_ref(element.as_bytes());
            let record = model::normalize_live_text(source, element);
            let (outgoing, time) = frame.record(record, received, raw, Some(i));
            out(outgoing, time);
        }
    };
    match model::live_batch(source, &text) {
        // The common case: one record, normalized from the frame's text.
        None => {
            let record = model::normalize_live_text(source, &text);
            // Not one JSON value: maybe several, one after the other.
            if record
                .as_ref()
                .is_err_and(|e| e.reason() == "malformed_json")
            {
                if let Some(values) = model::live_sequence(&text) {
                    return elements(values, out);
                }
            }
            let (outgoing, time) = frame.record(record, received, || text.clone().into(), None);
            out(outgoing, time);
        }
        Some(Err(e)) => out(
            frame.dead(e.reason(), &e.to_string(), text.into(), None),
            None,
        ),
        Some(Ok(values)) => elements(values, out),
    }
}

/// What every message made from one frame shares.
struct FrameContext<'a> {
    tenant: &'a Arc<str>,
    source: model::DataSource,
    received_at_ms: i64,
    builder: &'a MessageBuilder,
    metrics: &'a Metrics,
}

impl FrameContext<'_> {
    /// A dead letter of `raw`; `element`: its index in a batch frame.
    fn dead(
        &self,
        reason: &'static str,
        error: &str,
        raw: bytes::Bytes,
        element: Option<usize>,
    ) -> Outgoing {
        DeadLetter {
            tenant: self.tenant,
            source: self.source,
            reason,
            error,
            at_ms: self.received_at_ms,
            element,
        }
        .build(self.builder, self.metrics, raw)
    }

    /// One normalized record → its message and own time, or a dead letter
    /// of `raw()` (the record's bytes, only made when needed).
    fn record(
        &self,
        record: Result<model::Record, model::NormalizeError>,
        received: std::time::Instant,
        raw: impl FnOnce() -> bytes::Bytes,
        element: Option<usize>,
    ) -> (Outgoing, Option<i64>) {
        let record = match record {
            Ok(r) => r,
            Err(e) => return (self.dead(e.reason(), &e.to_string(), raw(), element), None),
        };
        UnknownFieldsKept {
            tenant: self.tenant,
            source: self.source.as_str(),
            count: record.unknown_field_count(),
        }
        .emit(self.metrics);
        if record.missing_expected_field().is_some() {
            PartialPushReceived {
                tenant: self.tenant,
                source: self.source.as_str(),
            }
            .emit(self.metrics);
        }
        let event_time = record.event_time_ms();
        let env = Envelope::new(
            self.tenant.to_string(),
            model::Origin::Live,
            self.received_at_ms,
            record,
        );
        let outgoing = match self.builder.build(&env) {
            Ok(message) => Outgoing::record(
                message,
                self.tenant.clone(),
                self.source,
                model::Origin::Live,
            )
            .with_stages(received),
            Err(e) => self.dead("encode", &e.to_string(), raw(), element),
        };
        (outgoing, event_time)
    }
}
