//! What every simulated WebSocket shares, the journey-driven ones
//! (`live`) and the firehose's: the close frame, and the open-socket count.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};

use super::AppState;

pub(super) fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// Counts a client socket as open while it lives.
pub(super) struct OpenGuard(pub(super) Arc<AppState>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.counters.connections_open.fetch_sub(1, Relaxed);
    }
}
