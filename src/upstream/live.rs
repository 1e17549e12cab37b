//! One live WebSocket per (tenant, data source), kept connected forever.
//!
//! - Reconnects with exponential backoff and full jitter, reset after a
//!   connection stayed up for `healthy_after`.
//! - Liveness by WebSocket ping and a pong deadline, never by silence:
//!   `/profile_history` is silent for up to an hour by design.
//! - HTTP 401 and `Invalid path.` are configuration problems: logged clearly,
//!   retried slowly (`auth_backoff`), never in a hot loop.
//! - Frames are forwarded as they are (text, binary, or the head of an
//!   oversized frame); parsing happens downstream in `model/`. Forwarding
//!   awaits queue space: a full queue pauses reading (backpressure).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
/// A text frame's payload: bytes known to be UTF-8.
pub use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::config::{redact_url, Secret, UpstreamConfig};
use crate::model::DataSource;
use crate::ops::internal_events::*;
use crate::ops::{Health, Metrics, SocketState};

/// Bytes tungstenite reads from the socket at a time. Its 128 KiB default is
/// zero-filled before the first read, so every socket kept all of it
/// resident: 140–150 KB of RSS per socket, 700 KB per tenant. Studio frames
/// are a few hundred bytes to a few KB, and a bigger frame still arrives
/// whole (the buffer only sets the read size). Measured at 100 tenants:
/// 34–38 KB per socket with 16 KiB, throughput unchanged.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// The exact text frame the Studio API sends after the 101 for an unknown path (§2.0).
pub const INVALID_PATH_FRAME: &str = "Invalid path.";

/// One frame as it came off the socket.
#[derive(Debug, Clone)]
pub struct LiveFrame {
    pub tenant: Arc<str>,
    pub source: DataSource,
    /// Wall clock at arrival, UTC epoch milliseconds.
    pub received_at_ms: i64,
    /// Monotonic arrival time, for end-to-end latency.
    pub received: Instant,
    pub payload: FramePayload,
}

#[derive(Debug, Clone)]
pub enum FramePayload {
    /// A text frame. The WebSocket layer has checked that it is UTF-8 (it
    /// fails the connection otherwise, RFC 6455 §8.1), so the type says so
    /// and nothing downstream checks again.
    Text(Utf8Bytes),
    Binary(Bytes),
    /// A frame above `max_frame_bytes`: only its head is kept (for the dead letter).
    Oversized {
        head: Bytes,
        len: usize,
    },
}

impl FramePayload {
    /// Bytes as a frame the pipeline can be fed without a socket (tests,
    /// fuzzing, profiling): text when they are UTF-8, else binary, since a
    /// text frame that is not UTF-8 never reaches the relay (the WebSocket
    /// layer fails the connection instead).
    pub fn from_bytes(bytes: Bytes) -> FramePayload {
        match Utf8Bytes::try_from(bytes.clone()) {
            Ok(text) => FramePayload::Text(text),
            Err(_) => FramePayload::Binary(bytes),
        }
    }
}

/// Connection lifecycle notifications (used for gap backfill).
#[derive(Debug, Clone)]
pub enum SocketEvent {
    Connected {
        tenant: Arc<str>,
        source: DataSource,
        at_ms: i64,
    },
    Disconnected {
        tenant: Arc<str>,
        source: DataSource,
        at_ms: i64,
    },
}

/// Joins the configured base URL and a source's path.
pub fn socket_url(base: &str, source: DataSource) -> String {
    format!("{}{}", base.trim_end_matches('/'), source.live_path())
}

/// Everything one socket task needs.
pub struct LiveSocket {
    pub tenant: Arc<str>,
    pub source: DataSource,
    pub token: Secret,
    pub settings: UpstreamConfig,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Optional listener for connect/disconnect events.
    pub events: Option<mpsc::UnboundedSender<SocketEvent>>,
}

/// Why a connection ended.
enum Ended {
    Shutdown,
    Lost {
        reason: &'static str,
        detail: String,
    },
    Unauthorized,
    InvalidPath,
}

impl LiveSocket {
    /// Runs until `shutdown`. Never returns an error: every failure is
    /// reported (log, metric, health) and retried.
    pub async fn run(self, out: mpsc::Sender<LiveFrame>, shutdown: CancellationToken) {
        let url = socket_url(&self.settings.live_url, self.source);
        let source = self.source.as_str();
        let tenant = self.tenant.clone();
        let mut attempt: u32 = 0;
        self.health
            .set_socket(&tenant, source, SocketState::Starting);
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let started = Instant::now();
            let ended = self.connect_and_read(&url, attempt, &out, &shutdown).await;
            let now_ms = chrono::Utc::now().timestamp_millis();
            let delay = match ended {
                Ended::Shutdown => break,
                Ended::Unauthorized => {
                    let delay = jitter_around(self.settings.auth_backoff);
                    WebSocketUnauthorized {
                        tenant: &tenant,
                        source,
                        retry_in: delay,
                    }
                    .emit(&self.metrics);
                    self.health
                        .set_socket(&tenant, source, SocketState::Unauthorized);
                    delay
                }
                Ended::InvalidPath => {
                    let delay = jitter_around(self.settings.auth_backoff);
                    WebSocketPathRejected {
                        tenant: &tenant,
                        source,
                        url: &redact_url(&url),
                        retry_in: delay,
                    }
                    .emit(&self.metrics);
                    self.health
                        .set_socket(&tenant, source, SocketState::InvalidPath);
                    delay
                }
                Ended::Lost { reason, detail } => {
                    if started.elapsed() >= self.settings.healthy_after {
                        attempt = 0;
                    }
                    attempt = attempt.saturating_add(1);
                    WebSocketConnectionLost {
                        tenant: &tenant,
                        source,
                        reason,
                        detail: &detail,
                    }
                    .emit(&self.metrics);
                    let delay = full_jitter(
                        self.settings.backoff_min,
                        self.settings.backoff_max,
                        attempt,
                    );
                    WebSocketBackoffScheduled {
                        tenant: &tenant,
                        source,
                        attempt,
                        delay,
                    }
                    .emit(&self.metrics);
                    self.health.set_socket(
                        &tenant,
                        source,
                        SocketState::BackingOff {
                            attempt,
                            reason: reason.to_string(),
                        },
                    );
                    delay
                }
            };
            if let Some(ev) = &self.events {
                let _ = ev.send(SocketEvent::Disconnected {
                    tenant: tenant.clone(),
                    source: self.source,
                    at_ms: now_ms,
                });
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        self.metrics
            .socket_connected
            .with_label_values(&[&tenant, source])
            .set(0);
        self.health
            .set_socket(&tenant, source, SocketState::Stopped);
    }

    async fn connect_and_read(
        &self,
        url: &str,
        attempt: u32,
        out: &mpsc::Sender<LiveFrame>,
        shutdown: &CancellationToken,
    ) -> Ended {
        let source = self.source.as_str();
        let mut request = match url.into_client_request() {
            Ok(r) => r,
            Err(e) => {
                return Ended::Lost {
                    reason: "handshake",
                    detail: format!("bad URL: {e}"),
                }
            }
        };
        let bearer = format!("Bearer {}", self.token.expose());
        match bearer.parse() {
            Ok(v) => {
                request.headers_mut().insert(http_auth(), v);
            }
            Err(_) => return Ended::Unauthorized,
        }
        // The library refuses frames above its limit by failing the whole
        // connection; keep its limit well above ours so that an oversized frame
        // is dead-lettered by us instead of costing a reconnect.
        let library_limit = self
            .settings
            .max_frame_bytes
            .saturating_mul(4)
            .max(64 << 20);
        let ws_config = tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .max_message_size(Some(library_limit))
            .max_frame_size(Some(library_limit));
        let receive_buffer = self.settings.receive_buffer_bytes;
        let connect = async move {
            let tcp = open_tcp(&request, receive_buffer).await?;
            tokio_tungstenite::client_async_tls_with_config(request, tcp, Some(ws_config), None)
                .await
        };
        let ws = tokio::select! {
            _ = shutdown.cancelled() => return Ended::Shutdown,
            r = tokio::time::timeout(self.settings.connect_timeout, connect) => r,
        };
        let mut ws = match ws {
            Err(_) => {
                return Ended::Lost {
                    reason: "network",
                    detail: "connect timeout".into(),
                }
            }
            Ok(Err(tungstenite::Error::Http(resp))) => {
                let status = resp.status().as_u16();
                return match status {
                    401 => Ended::Unauthorized,
                    500..=599 => Ended::Lost {
                        reason: "http_5xx",
                        detail: format!("handshake answered HTTP {status}"),
                    },
                    _ => Ended::Lost {
                        reason: "handshake",
                        detail: format!("handshake answered HTTP {status}"),
                    },
                };
            }
            Ok(Err(e)) => {
                return Ended::Lost {
                    reason: "network",
                    detail: scrub(&e.to_string(), &self.token),
                }
            }
            Ok(Ok((ws, _response))) => ws,
        };
        let tenant = self.tenant.clone();
        WebSocketConnectionEstablished {
            tenant: &tenant,
            source,
            attempt,
        }
        .emit(&self.metrics);
        self.health
            .set_socket(&tenant, source, SocketState::Connected);
        if let Some(ev) = &self.events {
            let at_ms = chrono::Utc::now().timestamp_millis();
            let _ = ev.send(SocketEvent::Connected {
                tenant: tenant.clone(),
                source: self.source,
                at_ms,
            });
        }

        let mut ping = tokio::time::interval(self.settings.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await; // the first tick is immediate
        let mut pong_deadline: Option<tokio::time::Instant> = None;
        let max = self.settings.max_frame_bytes;
        let frames_received = FrameReceivedCounter::new(&self.metrics, &tenant, source);
        loop {
            let deadline = pong_deadline;
            let msg = tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = ws.close(None).await;
                    return Ended::Shutdown;
                }
                _ = ping.tick(), if pong_deadline.is_none() => {
                    if let Err(e) = ws.send(Message::Ping(Bytes::from_static(b"studio-relay"))).await {
                        return Ended::Lost { reason: "network", detail: format!("ping failed: {e}") };
                    }
                    pong_deadline = Some(tokio::time::Instant::now() + self.settings.pong_timeout);
                    continue;
                }
                _ = sleep_until_opt(deadline), if deadline.is_some() => {
                    return Ended::Lost { reason: "pong_timeout", detail: format!("no pong within {:?}", self.settings.pong_timeout) };
                }
                msg = ws.next() => msg,
            };
            let payload = match msg {
                None => {
                    return Ended::Lost {
                        reason: "closed",
                        detail: "stream ended".into(),
                    }
                }
                Some(Err(e)) => {
                    return Ended::Lost {
                        reason: "network",
                        detail: scrub(&e.to_string(), &self.token),
                    }
                }
                Some(Ok(Message::Pong(_))) => {
                    pong_deadline = None;
                    continue;
                }
                Some(Ok(Message::Ping(_))) => {
                    // tungstenite queued the pong; make sure it leaves now.
                    let _ = ws.flush().await;
                    continue;
                }
                Some(Ok(Message::Close(frame))) => {
                    let detail = frame
                        .map(|f| format!("close {} {}", u16::from(f.code), f.reason))
                        .unwrap_or_default();
                    return Ended::Lost {
                        reason: "closed",
                        detail,
                    };
                }
                Some(Ok(Message::Frame(_))) => continue,
                Some(Ok(Message::Text(text))) => {
                    if text.as_str() == INVALID_PATH_FRAME {
                        let _ = ws.close(None).await;
                        return Ended::InvalidPath;
                    }
                    if text.len() > max {
                        let bytes = Bytes::from(text);
                        FramePayload::Oversized {
                            len: bytes.len(),
                            head: bytes.slice(..max.min(64 * 1024)),
                        }
                    } else {
                        FramePayload::Text(text)
                    }
                }
                Some(Ok(Message::Binary(bytes))) => {
                    if bytes.len() > max {
                        FramePayload::Oversized {
                            len: bytes.len(),
                            head: bytes.slice(..max.min(64 * 1024)),
                        }
                    } else {
                        FramePayload::Binary(bytes)
                    }
                }
            };
            frames_received.emit();
            let frame = LiveFrame {
                tenant: tenant.clone(),
                source: self.source,
                received_at_ms: chrono::Utc::now().timestamp_millis(),
                received: Instant::now(),
                payload,
            };
            let waited = Instant::now();
            if out.send(frame).await.is_err() {
                // The pipeline is gone: only happens on shutdown.
                return Ended::Shutdown;
            }
            // While we waited for queue space we could not read pongs; do not
            // count that time against the server.
            if let Some(d) = pong_deadline.as_mut() {
                *d += waited.elapsed();
            }
        }
    }
}

/// The TCP connection for `request`'s host and port (every address it
/// resolves to, in turn), Nagle off, and the kernel receive buffer capped at
/// `receive_buffer` bytes (0: the kernel's default; see
/// `upstream.receive_buffer_bytes`). `connect_async` offers no way to set
/// the buffer, which must be set before connecting to take effect.
async fn open_tcp(
    request: &tungstenite::handshake::client::Request,
    receive_buffer: u32,
) -> std::io::Result<tokio::net::TcpStream> {
    use std::io::{Error, ErrorKind};
    let uri = request.uri();
    let host = uri
        .host()
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "URL has no host"))?;
    // An IPv6 literal comes bracketed (`[::1]`); the resolver wants it bare.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("wss") {
            443
        } else {
            80
        });
    let mut last = Error::new(
        ErrorKind::NotFound,
        format!("{host} resolved to no address"),
    );
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if receive_buffer > 0 {
            socket.set_recv_buffer_size(receive_buffer)?;
        }
        match socket.connect(addr).await {
            Ok(tcp) => {
                tcp.set_nodelay(true)?;
                return Ok(tcp);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn http_auth() -> tungstenite::http::header::HeaderName {
    tungstenite::http::header::AUTHORIZATION
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Error texts from the network stack may quote the request; make sure the
/// token never survives into a log line.
fn scrub(text: &str, token: &Secret) -> String {
    if token.is_empty() {
        return text.to_string();
    }
    text.replace(token.expose(), crate::config::REDACTED)
}

/// Exponential backoff with full jitter: uniform in [min/2, min(max, min·2^(attempt-1))].
pub fn full_jitter(min: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = min.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let cap = exp.min(max).max(min);
    let lo = min / 2;
    rand::thread_rng().gen_range(lo..=cap)
}

/// ±20 % around a fixed delay so many sockets do not retry in lockstep.
pub fn jitter_around(d: Duration) -> Duration {
    let f: f64 = rand::thread_rng().gen_range(0.8..=1.2);
    d.mul_f64(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cap is set before connecting (afterwards the kernel ignores it
    /// for the window it already advertised); Linux reports double the
    /// value asked for (its bookkeeping overhead).
    #[tokio::test]
    async fn live_sockets_get_the_configured_receive_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/calls", listener.local_addr().unwrap());
        let request = url.into_client_request().unwrap();
        for (asked, at_most) in [(16 * 1024, 64 * 1024), (64 * 1024, 256 * 1024)] {
            let tcp = open_tcp(&request, asked).await.unwrap();
            let _accepted = listener.accept().await.unwrap();
            let socket = tokio::net::TcpSocket::from_std_stream(tcp.into_std().unwrap());
            let got = socket.recv_buffer_size().unwrap();
            assert!(got >= asked && got <= at_most, "asked {asked}, got {got}");
        }
        // 0: the kernel's default and its tuning (a larger buffer here).
        let tcp = open_tcp(&request, 0).await.unwrap();
        let _accepted = listener.accept().await.unwrap();
        let socket = tokio::net::TcpSocket::from_std_stream(tcp.into_std().unwrap());
        assert!(socket.recv_buffer_size().unwrap() > 64 * 1024);
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for attempt in 1..40 {
            let d = full_jitter(min, max, attempt);
            assert!(d >= min / 2 && d <= max, "attempt {attempt}: {d:?}");
        }
        let late: Vec<_> = (0..50).map(|_| full_jitter(min, max, 10)).collect();
        assert!(
            late.iter().any(|d| *d > Duration::from_secs(1)),
            "backoff should grow: {late:?}"
        );
    }

    #[test]
    fn urls_join_cleanly() {
        assert_eq!(
            socket_url("ws://127.0.0.1:1/", DataSource::Calls),
            "ws://127.0.0.1:1/calls"
        );
        assert_eq!(
            socket_url("wss://h", DataSource::ProfileHistory),
            "wss://h/profile_history"
        );
    }

    #[test]
    fn scrub_removes_token() {
        let t = Secret::new("abc123");
        assert_eq!(
            scrub("failed for Bearer abc123", &t),
            format!("failed for Bearer {}", crate::config::REDACTED)
        );
    }
}
