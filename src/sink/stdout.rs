//! `StdoutSink`: one line per event. JSON payloads are written as they are
//! (NDJSON); other payloads as a JSON line with the payload in base64.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::{AckFuture, OutboundMessage, Sink, SinkError, SinkErrorKind};

type Writer = Box<dyn Write + Send>;

/// Writes events to stdout (or an injected writer), buffered.
pub struct StdoutSink {
    out: Arc<Mutex<std::io::BufWriter<Writer>>>,
}

impl StdoutSink {
    pub fn new() -> Self {
        Self::with_writer(Box::new(std::io::stdout()))
    }

    pub fn with_writer(w: Writer) -> Self {
        let out = Arc::new(Mutex::new(std::io::BufWriter::with_capacity(64 * 1024, w)));
        // Lines reach a terminal or pipe promptly even when traffic is slow.
        let weak = Arc::downgrade(&out);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                while let Some(out) = weak.upgrade() {
                    let _ = out.lock().map(|mut o| o.flush());
                    drop(out);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
        StdoutSink { out }
    }

    /// The line written for one message.
    pub fn line(m: &OutboundMessage) -> Vec<u8> {
        let is_json = m
            .headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("application/json"));
        if is_json && !m.payload.contains(&b'\n') {
            let mut v = m.payload.to_vec();
            v.push(b'\n');
            return v;
        }
        use base64_lite::encode;
        let headers: serde_json::Map<String, serde_json::Value> = m
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect();
        let mut v = serde_json::to_vec(&serde_json::json!({
            "destination": m.destination,
            "key": m.key,
            "headers": headers,
            "payload_base64": encode(&m.payload),
        }))
        .unwrap_or_default();
        v.push(b'\n');
        v
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Sink for StdoutSink {
    fn name(&self) -> &'static str {
        "stdout"
    }

    async fn prepare(&self, _destinations: &[String]) -> Result<(), SinkError> {
        Ok(())
    }

    async fn send(&self, m: &OutboundMessage) -> Result<AckFuture, SinkError> {
        let line = Self::line(m);
        let r = self
            .out
            .lock()
            .map_err(|_| SinkError::new(SinkErrorKind::Unavailable, "stdout writer poisoned"))?
            .write_all(&line);
        let r =
            r.map_err(|e| SinkError::new(SinkErrorKind::Unavailable, format!("write stdout: {e}")));
        Ok(Box::pin(async move { r }))
    }

    async fn flush(&self, _timeout: Duration) -> Result<(), SinkError> {
        self.out
            .lock()
            .map_err(|_| SinkError::new(SinkErrorKind::Unavailable, "stdout writer poisoned"))?
            .flush()
            .map_err(|e| SinkError::new(SinkErrorKind::Unavailable, format!("flush stdout: {e}")))
    }

    async fn check_health(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Standard base64 without a dependency for one call site.
mod base64_lite {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(input: &[u8]) -> String {
        let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[cfg(test)]
    #[test]
    fn rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(i.as_bytes()), o);
        }
    }
}
