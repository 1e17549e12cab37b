//! Dead letters: anything that cannot be relayed is published to the
//! dead-letter destination with its raw bytes and why, counted and logged.
//! Every dead letter (a bad frame, a record that does not normalize or
//! encode, a message the broker refuses) is made here.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;

use crate::model::DataSource;
use crate::ops::internal_events::EventDeadLettered;
use crate::ops::Metrics;
use crate::publish::message_builder::{mark_element, MessageBuilder};
use crate::publish::outgoing::Outgoing;

/// Why one input is dead-lettered, and whose it is.
pub struct DeadLetter<'a> {
    pub tenant: &'a Arc<str>,
    pub source: DataSource,
    /// Low-cardinality reason (metric label and header).
    pub reason: &'static str,
    pub error: &'a str,
    /// When the input was received (Unix ms): the dead letter's time.
    pub at_ms: i64,
    /// Its index in a batch frame, when it is one element of one.
    pub element: Option<usize>,
}

impl DeadLetter<'_> {
    /// The dead letter of `raw`, counted and logged.
    pub fn build(&self, builder: &MessageBuilder, metrics: &Metrics, raw: Bytes) -> Outgoing {
        let error = match self.element {
            Some(i) => Cow::Owned(format!("element {i} of a batch frame: {}", self.error)),
            None => Cow::Borrowed(self.error),
        };
        EventDeadLettered {
            tenant: self.tenant,
            source: self.source.as_str(),
            reason: self.reason,
            error: &error,
        }
        .emit(metrics);
        let mut message = builder.dead_letter(
            self.tenant,
            self.source,
            self.reason,
            &error,
            self.at_ms,
            raw,
        );
        if let Some(i) = self.element {
            mark_element(&mut message, i);
        }
        Outgoing::dead_letter(message, self.tenant.clone(), self.source)
    }
}
