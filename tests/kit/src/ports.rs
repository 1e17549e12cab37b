//! How the servers the kit starts get their loopback ports.
//!
//! Picking a free port and handing it to a server is a race: the port is
//! released before the server binds it, and another process (any outgoing
//! connection takes a local port from the same range) can take it in
//! between. So:
//!
//! - A server that can bind port 0 and say which port it got does so, and
//!   the kit reads the port back: the relay's ops listener and the
//!   simulator (from their JSON logs), `nats-server -p -1` and Apicurio
//!   Registry with `quarkus.http.port=0` (from their logs).
//! - Apache Kafka must be told its ports (the KRaft controller's port is
//!   part of the quorum's configuration), so it gets ports that were free a
//!   moment ago and is started again on fresh ones when it cannot bind them,
//!   up to [`START_ATTEMPTS`] times.
//! - A server counts as started only when its own log says so
//!   ([`wait_for_line`]): an open port alone could be another process's.
//! - A server that a client must be pointed at before it starts sits behind
//!   a [`ReservedPort`].
//! - A restart (an outage in a test) comes back on the port it had, where
//!   its clients look, as a real broker would.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// How many times a server that must be told its ports is started on fresh
/// ones before giving up.
pub(crate) const START_ATTEMPTS: usize = 3;

/// A port that was free a moment ago (see the module's documentation for
/// why only Kafka gets one).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The length of `log` now: where the next start's part of it begins.
pub(crate) fn log_end(log: &Path) -> usize {
    std::fs::metadata(log).map_or(0, |m| m.len() as usize)
}

/// The text of `log` from byte `from` on (all of it when the file is
/// shorter, as when a server truncates it on start).
pub(crate) fn log_since(log: &Path, from: usize) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let part = text.get(from..).unwrap_or(&text);
    String::from_utf8_lossy(part).into_owned()
}

/// Waits until `child` writes a line containing `needle` to `log` after
/// byte `from`; an error if it exits first (its port taken, say) or after
/// 120 s.
pub(crate) fn wait_for_line(
    child: &mut Child,
    log: &Path,
    from: usize,
    needle: &str,
    what: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !log_since(log, from).contains(needle) {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(format!("{what} exited ({status}); log: {}", log.display()));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{what} did not log \"{needle}\" within 120 s; log: {}",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A loopback port held for a server that starts later, so that a client
/// can be pointed at it first: bound, so no other process can take it, but
/// not listening, so connections are refused as if nothing were there,
/// until [`ReservedPort::forward_to`] forwards them to the server.
pub struct ReservedPort {
    socket: Option<tokio::net::TcpSocket>,
    addr: SocketAddr,
    forwarder: Option<tokio::task::JoinHandle<()>>,
}

impl ReservedPort {
    pub fn new() -> ReservedPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind 127.0.0.1:0");
        let addr = socket.local_addr().unwrap();
        ReservedPort {
            socket: Some(socket),
            addr,
            forwarder: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts listening and forwards every connection to `target` (on the
    /// caller's tokio runtime) until dropped.
    pub fn forward_to(&mut self, target: SocketAddr) {
        let listener = self
            .socket
            .take()
            .expect("a reserved port forwards once")
            .listen(64)
            .expect("listen on the reserved port");
        self.forwarder = Some(tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }
}

impl Default for ReservedPort {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ReservedPort {
    fn drop(&mut self) {
        if let Some(task) = self.forwarder.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    #[tokio::test]
    async fn a_reserved_port_is_taken_and_refuses_connections_until_it_forwards_them() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut port = ReservedPort::new();
        assert!(
            TcpListener::bind(port.addr()).is_err(),
            "no one else can bind a reserved port"
        );
        assert!(
            TcpStream::connect(port.addr()).await.is_err(),
            "a reserved port refuses connections"
        );

        port.forward_to(server.local_addr().unwrap());
        let mut client = TcpStream::connect(port.addr()).await.unwrap();
        let (mut accepted, _) = server.accept().await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut received = [0u8; 4];
        accepted.read_exact(&mut received).await.unwrap();
        assert_eq!(&received, b"ping");
    }

    #[test]
    fn a_log_is_read_from_where_this_start_began() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        std::fs::write(&log, "first start: ready\n").unwrap();
        let from = log_end(&log);
        assert_eq!(log_since(&log, from), "");
        std::fs::write(&log, "first start: ready\nsecond start\n").unwrap();
        assert_eq!(log_since(&log, from), "second start\n");
        std::fs::write(&log, "truncated\n").unwrap();
        assert_eq!(log_since(&log, from), "truncated\n");
    }
}
