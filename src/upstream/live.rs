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
use crate::ops::internal_events::{
    FrameReceivedCounter, TenantStateChanged, WebSocketBackoffScheduled,
    WebSocketConnectionEstablished, WebSocketConnectionLost, WebSocketPathRejected,
    WebSocketStopped, WebSocketUnauthorized,
};
use crate::ops::{Health, Metrics, SocketState};
use crate::upstream::egress::Egress;

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
    /// Directly or through a proxy (one for every socket).
    pub egress: Arc<Egress>,
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

/// What came off the socket, as the read loop acts on it.
enum Incoming {
    Frame(FramePayload),
    Pong,
    /// tungstenite queued the pong; it must be flushed.
    Ping,
    Ignored,
    /// The Studio API's answer to an unknown path.
    InvalidPath,
    Ended(Ended),
}

/// The socket as tungstenite hands it over.
type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The reconnect delays of one socket: exponential from `backoff_min` to
/// `backoff_max` with full jitter, started over after a healthy connection.
struct Reconnects {
    min: Duration,
    max: Duration,
    delays: backon::ExponentialBackoff,
    attempt: u32,
}

impl Reconnects {
    fn new(settings: &UpstreamConfig) -> Reconnects {
        Reconnects {
            min: settings.backoff_min,
            max: settings.backoff_max,
            delays: exponential(settings.backoff_min, settings.backoff_max),
            attempt: 0,
        }
    }

    /// The next delay, after a connection that stayed up `up_for`.
    fn next(&mut self, up_for: Duration, healthy_after: Duration) -> Duration {
        if up_for >= healthy_after {
            self.attempt = 0;
            self.delays = exponential(self.min, self.max);
        }
        self.attempt = self.attempt.saturating_add(1);
        let cap = self.delays.next().unwrap_or(self.max);
        full_jitter(self.min, cap)
    }
}

fn exponential(min: Duration, max: Duration) -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .without_max_times()
        .build()
}

/// Full jitter: uniform in [min/2, cap] (cap at least `min`).
fn full_jitter(min: Duration, cap: Duration) -> Duration {
    rand::thread_rng().gen_range(min / 2..=cap.max(min))
}

impl LiveSocket {
    /// Runs until `shutdown`. Never returns an error: every failure is
    /// reported (log, metric, health) and retried.
    pub async fn run(self, out: mpsc::Sender<LiveFrame>, shutdown: CancellationToken) {
        let url = socket_url(&self.settings.live_url, self.source);
        let mut reconnects = Reconnects::new(&self.settings);
        self.set_state(SocketState::Starting);
        while !shutdown.is_cancelled() {
            let started = Instant::now();
            let ended = self
                .connect_and_read(&url, reconnects.attempt, &out, &shutdown)
                .await;
            let Some(delay) = self.delay_after(ended, &url, started.elapsed(), &mut reconnects)
            else {
                break;
            };
            if let Some(ev) = &self.events {
                let _ = ev.send(SocketEvent::Disconnected {
                    tenant: self.tenant.clone(),
                    source: self.source,
                    at_ms: chrono::Utc::now().timestamp_millis(),
                });
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        WebSocketStopped {
            tenant: &self.tenant,
            source: self.source.as_str(),
        }
        .emit(&self.metrics);
        self.set_state(SocketState::Stopped);
    }

    fn set_state(&self, state: SocketState) {
        let metrics = &self.metrics;
        self.health
            .set_socket_then(&self.tenant, self.source.as_str(), state, |now| {
                TenantStateChanged {
                    tenant: &self.tenant,
                    state: now,
                }
                .emit(metrics)
            });
    }

    /// Reports how the connection ended; the delay before the next one
    /// (None: shutdown).
    fn delay_after(
        &self,
        ended: Ended,
        url: &str,
        up_for: Duration,
        reconnects: &mut Reconnects,
    ) -> Option<Duration> {
        let (tenant, source) = (&*self.tenant, self.source.as_str());
        let delay = match ended {
            Ended::Shutdown => return None,
            Ended::Unauthorized => {
                let retry_in = jitter_around(self.settings.auth_backoff);
                WebSocketUnauthorized {
                    tenant,
                    source,
                    retry_in,
                }
                .emit(&self.metrics);
                self.set_state(SocketState::Unauthorized);
                retry_in
            }
            Ended::InvalidPath => {
                let retry_in = jitter_around(self.settings.auth_backoff);
                let url = &redact_url(url);
                WebSocketPathRejected {
                    tenant,
                    source,
                    url,
                    retry_in,
                }
                .emit(&self.metrics);
                self.set_state(SocketState::InvalidPath);
                retry_in
            }
            Ended::Lost { reason, detail } => {
                let detail = &detail;
                let delay = reconnects.next(up_for, self.settings.healthy_after);
                let attempt = reconnects.attempt;
                WebSocketConnectionLost {
                    tenant,
                    source,
                    reason,
                    detail,
                }
                .emit(&self.metrics);
                WebSocketBackoffScheduled {
                    tenant,
                    source,
                    attempt,
                    delay,
                }
                .emit(&self.metrics);
                let reason = reason.to_string();
                self.set_state(SocketState::BackingOff { attempt, reason });
                delay
            }
        };
        Some(delay)
    }

    async fn connect_and_read(
        &self,
        url: &str,
        attempt: u32,
        out: &mpsc::Sender<LiveFrame>,
        shutdown: &CancellationToken,
    ) -> Ended {
        let ws = match self.connect(url, shutdown).await {
            Ok(ws) => ws,
            Err(ended) => return ended,
        };
        self.announce_connected(attempt);
        self.read(ws, out, shutdown).await
    }

    /// The handshake, with the Bearer token, within `connect_timeout`.
    async fn connect(&self, url: &str, shutdown: &CancellationToken) -> Result<Stream, Ended> {
        let request = self.request(url)?;
        let ws_config = self.ws_config();
        let receive_buffer = self.settings.receive_buffer_bytes;
        let egress = self.egress.clone();
        let connect = async move {
            let tcp = egress.open(request.uri(), receive_buffer).await?;
            let tls = Some(egress.tls().connector());
            tokio_tungstenite::client_async_tls_with_config(request, tcp, Some(ws_config), tls)
                .await
        };
        let ws = tokio::select! {
            _ = shutdown.cancelled() => return Err(Ended::Shutdown),
            r = tokio::time::timeout(self.settings.connect_timeout, connect) => r,
        };
        match ws {
            Err(_) => Err(Ended::Lost {
                reason: "network",
                detail: "connect timeout".into(),
            }),
            Ok(Err(e)) => Err(self.handshake_failed(e)),
            Ok(Ok((ws, _response))) => Ok(ws),
        }
    }

    fn request(&self, url: &str) -> Result<tungstenite::handshake::client::Request, Ended> {
        let mut request = url.into_client_request().map_err(|e| Ended::Lost {
            reason: "handshake",
            detail: format!("bad URL: {e}"),
        })?;
        let bearer = format!("Bearer {}", self.token.expose());
        let value = bearer.parse().map_err(|_| Ended::Unauthorized)?;
        request.headers_mut().insert(http_auth(), value);
        Ok(request)
    }

    /// The library refuses frames above its limit by failing the whole
    /// connection; keep its limit well above ours so that an oversized
    /// frame is dead-lettered by us instead of costing a reconnect.
    fn ws_config(&self) -> tungstenite::protocol::WebSocketConfig {
        let library_limit = self
            .settings
            .max_frame_bytes
            .saturating_mul(4)
            .max(64 << 20);
        tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .max_message_size(Some(library_limit))
            .max_frame_size(Some(library_limit))
    }

    fn handshake_failed(&self, e: tungstenite::Error) -> Ended {
        if let Some(tls) = tls_failure(&e) {
            return Ended::Lost {
                reason: "handshake",
                detail: format!(
                    "TLS: {tls}; if the upstream's certificate is signed by a private CA \
                     (a TLS-inspecting proxy), add that CA with upstream.ca_file"
                ),
            };
        }
        let tungstenite::Error::Http(resp) = e else {
            return Ended::Lost {
                reason: "network",
                detail: scrub(&e.to_string(), &self.token),
            };
        };
        let status = resp.status().as_u16();
        let detail = format!("handshake answered HTTP {status}");
        match status {
            401 => Ended::Unauthorized,
            500..=599 => Ended::Lost {
                reason: "http_5xx",
                detail,
            },
            _ => Ended::Lost {
                reason: "handshake",
                detail,
            },
        }
    }

    fn announce_connected(&self, attempt: u32) {
        WebSocketConnectionEstablished {
            tenant: &self.tenant,
            source: self.source.as_str(),
            attempt,
        }
        .emit(&self.metrics);
        self.set_state(SocketState::Connected);
        if let Some(ev) = &self.events {
            let _ = ev.send(SocketEvent::Connected {
                tenant: self.tenant.clone(),
                source: self.source,
                at_ms: chrono::Utc::now().timestamp_millis(),
            });
        }
    }

    /// Reads frames until the connection ends, pinging for liveness.
    async fn read(
        &self,
        mut ws: Stream,
        out: &mpsc::Sender<LiveFrame>,
        shutdown: &CancellationToken,
    ) -> Ended {
        let mut ping = tokio::time::interval(self.settings.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await; // the first tick is immediate
        let mut pong_deadline: Option<tokio::time::Instant> = None;
        let frames_received =
            FrameReceivedCounter::new(&self.metrics, &self.tenant, self.source.as_str());
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
            let payload = match self.incoming(msg) {
                Incoming::Frame(payload) => payload,
                Incoming::Pong => {
                    pong_deadline = None;
                    continue;
                }
                Incoming::Ping => {
                    let _ = ws.flush().await;
                    continue;
                }
                Incoming::Ignored => continue,
                Incoming::InvalidPath => {
                    let _ = ws.close(None).await;
                    return Ended::InvalidPath;
                }
                Incoming::Ended(ended) => return ended,
            };
            frames_received.emit();
            let waited = Instant::now();
            if out.send(self.frame(payload)).await.is_err() {
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

    /// What one read from the socket means.
    fn incoming(&self, msg: Option<Result<Message, tungstenite::Error>>) -> Incoming {
        let max = self.settings.max_frame_bytes;
        let oversized = |bytes: Bytes| FramePayload::Oversized {
            len: bytes.len(),
            head: bytes.slice(..max.min(64 * 1024)),
        };
        let msg = match msg {
            None => {
                return Incoming::Ended(Ended::Lost {
                    reason: "closed",
                    detail: "stream ended".into(),
                })
            }
            Some(Err(e)) => {
                return Incoming::Ended(Ended::Lost {
                    reason: "network",
                    detail: scrub(&e.to_string(), &self.token),
                })
            }
            Some(Ok(msg)) => msg,
        };
        match msg {
            Message::Pong(_) => Incoming::Pong,
            Message::Ping(_) => Incoming::Ping,
            Message::Frame(_) => Incoming::Ignored,
            Message::Close(frame) => Incoming::Ended(Ended::Lost {
                reason: "closed",
                detail: frame
                    .map(|f| format!("close {} {}", u16::from(f.code), f.reason))
                    .unwrap_or_default(),
            }),
            Message::Text(text) if text.as_str() == INVALID_PATH_FRAME => Incoming::InvalidPath,
            Message::Text(text) if text.len() > max => {
                Incoming::Frame(oversized(Bytes::from(text)))
            }
            Message::Text(text) => Incoming::Frame(FramePayload::Text(text)),
            Message::Binary(bytes) if bytes.len() > max => Incoming::Frame(oversized(bytes)),
            Message::Binary(bytes) => Incoming::Frame(FramePayload::Binary(bytes)),
        }
    }

    fn frame(&self, payload: FramePayload) -> LiveFrame {
        LiveFrame {
            tenant: self.tenant.clone(),
            source: self.source,
            received_at_ms: chrono::Utc::now().timestamp_millis(),
            received: Instant::now(),
            payload,
        }
    }
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

/// The TLS handshake's failure, if that is what `e` is: tungstenite's own
/// TLS error, or rustls's as the stream's I/O error (how tokio-rustls
/// reports a refused certificate).
fn tls_failure(e: &tungstenite::Error) -> Option<String> {
    match e {
        tungstenite::Error::Tls(tls) => Some(tls.to_string()),
        tungstenite::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(ToString::to_string),
        _ => None,
    }
}

/// ±20 % around a fixed delay so many sockets do not retry in lockstep.
pub fn jitter_around(d: Duration) -> Duration {
    let f: f64 = rand::thread_rng().gen_range(0.8..=1.2);
    d.mul_f64(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reconnects(min_ms: u64, max_ms: u64) -> Reconnects {
        Reconnects::new(&UpstreamConfig {
            backoff_min: Duration::from_millis(min_ms),
            backoff_max: Duration::from_millis(max_ms),
            ..UpstreamConfig::default()
        })
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        let healthy = Duration::from_secs(60);
        let mut r = reconnects(100, 5_000);
        for attempt in 1..40 {
            let d = r.next(Duration::ZERO, healthy);
            assert_eq!(r.attempt, attempt);
            // Full jitter under the exponential cap: min·2^(attempt-1), at most max.
            let cap = min.saturating_mul(1 << (attempt - 1).min(20)).min(max);
            assert!(
                d >= min / 2 && d <= cap,
                "attempt {attempt}: {d:?} above {cap:?}"
            );
        }
        let late: Vec<_> = (0..50)
            .map(|_| {
                let mut r = reconnects(100, 5_000);
                (1..10).for_each(|_| _ = r.next(Duration::ZERO, healthy));
                r.next(Duration::ZERO, healthy)
            })
            .collect();
        assert!(
            late.iter().any(|d| *d > Duration::from_secs(1)),
            "backoff should grow: {late:?}"
        );
    }

    #[test]
    fn a_healthy_connection_starts_the_backoff_over() {
        let healthy = Duration::from_secs(60);
        let mut r = reconnects(100, 5_000);
        (0..8).for_each(|_| _ = r.next(Duration::ZERO, healthy));
        let d = r.next(healthy, healthy);
        assert_eq!(r.attempt, 1);
        assert!(d <= Duration::from_millis(100), "{d:?}");
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
