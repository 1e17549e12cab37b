//! How the live sockets reach the Studio API: straight to its host, or
//! through the HTTP CONNECT proxy the environment names.
//!
//! The variables and their rules are the ones the GraphQL client (reqwest)
//! and curl follow: `HTTPS_PROXY` for `wss://` URLs, `HTTP_PROXY` for
//! `ws://`, `ALL_PROXY` for both, each also in lower case, and `NO_PROXY`
//! (a comma-separated list of hosts, domains, IPs and CIDR ranges; `*` for
//! all) for the hosts reached directly. Reading them and matching a host is
//! `hyper-util`'s proxy matcher; the CONNECT exchange is its `Tunnel`.

use std::io::{Error, ErrorKind};

use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::http::Uri;
use tower_service::Service;

use crate::upstream::tls::UpstreamTls;

/// The way out for the live sockets: which destinations go through a
/// proxy, and whom TLS trusts.
pub struct Egress {
    proxies: Matcher,
    tls: UpstreamTls,
}

impl Egress {
    /// The proxies the process environment names (none: every socket
    /// connects directly).
    pub fn from_env(tls: UpstreamTls) -> Egress {
        Egress::with_proxies(Matcher::from_env(), tls)
    }

    /// `proxies` decide (a matcher built in code, for tests and embedders).
    pub fn with_proxies(proxies: Matcher, tls: UpstreamTls) -> Egress {
        Egress { proxies, tls }
    }

    /// Whom the upstream connections trust.
    pub fn tls(&self) -> &UpstreamTls {
        &self.tls
    }

    /// The proxy that `url` (`ws://` or `wss://`) goes through, if any.
    fn proxy_for(&self, url: &Uri) -> Option<Intercept> {
        // The matcher speaks HTTP: a WebSocket URL is matched as the HTTP
        // URL its handshake is sent to.
        let scheme = if url.scheme_str() == Some("wss") {
            "https"
        } else {
            "http"
        };
        let as_http = Uri::builder()
            .scheme(scheme)
            .authority(url.authority()?.as_str())
            .path_and_query("/")
            .build()
            .ok()?;
        self.proxies.intercept(&as_http)
    }

    /// A TCP connection to `url`'s host and port, through its proxy when
    /// it has one, with Nagle off and the kernel receive buffer capped at
    /// `receive_buffer` bytes (0: the kernel's default). Errors say which
    /// host (and proxy) could not be reached.
    pub async fn open(&self, url: &Uri, receive_buffer: u32) -> std::io::Result<TcpStream> {
        let (host, port) = host_and_port(url)?;
        match self.proxy_for(url) {
            None => direct(host, port, receive_buffer)
                .await
                .map_err(|e| Error::new(e.kind(), format!("connecting to {host}:{port}: {e}"))),
            Some(proxy) => tunnel(&proxy, host, port, receive_buffer).await,
        }
    }
}

/// `url`'s host (an IPv6 literal without its brackets) and port (the
/// scheme's default when it names none).
fn host_and_port(url: &Uri) -> std::io::Result<(&str, u16)> {
    let host = url
        .host()
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "URL has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let default = if url.scheme_str() == Some("wss") {
        443
    } else {
        80
    };
    Ok((host, url.port_u16().unwrap_or(default)))
}

/// Every address `host` resolves to, in turn. The buffer must be set before
/// connecting to take effect, which `connect_async` offers no way to do.
async fn direct(host: &str, port: u16, receive_buffer: u32) -> std::io::Result<TcpStream> {
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

/// A CONNECT tunnel to `host:port` through `proxy`; the stream is the
/// proxy's TCP connection, carrying the tunnel once the proxy said 200.
async fn tunnel(
    proxy: &Intercept,
    host: &str,
    port: u16,
    receive_buffer: u32,
) -> std::io::Result<TcpStream> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    if receive_buffer > 0 {
        connector.set_recv_buffer_size(Some(receive_buffer as usize));
    }
    let mut tunnel = Tunnel::new(proxy.uri().clone(), connector);
    if let Some(auth) = proxy.basic_auth() {
        tunnel = tunnel.with_auth(auth.clone());
    }
    // Brackets back on an IPv6 literal: the CONNECT line wants them.
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let through = |e: &dyn std::fmt::Display| {
        Error::other(format!(
            "connecting to {authority} through the proxy {}: {e}",
            proxy_name(proxy.uri())
        ))
    };
    let target = Uri::builder()
        .scheme("http")
        .authority(authority.as_str())
        .path_and_query("/")
        .build()
        .map_err(|e| through(&e))?;
    let stream = tunnel.call(target).await.map_err(|e| {
        // The tunnel's own message is generic; its cause says what failed.
        match std::error::Error::source(&e) {
            Some(cause) => through(&format!("{e} ({cause})")),
            None => through(&e),
        }
    })?;
    Ok(stream.into_inner())
}

/// The proxy as logs may show it: scheme, host and port, never its
/// credentials.
fn proxy_name(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    match (uri.host(), uri.port_u16()) {
        (Some(host), Some(port)) => format!("{scheme}://{host}:{port}"),
        (Some(host), None) => format!("{scheme}://{host}"),
        _ => "(no host)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(http: &str, https: &str, no: &str) -> Egress {
        Egress::with_proxies(
            Matcher::builder().http(http).https(https).no(no).build(),
            UpstreamTls::load(None).unwrap(),
        )
    }

    fn proxy_of(e: &Egress, url: &str) -> Option<String> {
        e.proxy_for(&url.parse().unwrap())
            .map(|p| p.uri().to_string())
    }

    /// The cap is set before connecting (afterwards the kernel ignores it
    /// for the window it already advertised); Linux reports double the
    /// value asked for (its bookkeeping overhead).
    #[tokio::test]
    async fn live_sockets_get_the_configured_receive_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/calls", listener.local_addr().unwrap());
        let url: Uri = url.parse().unwrap();
        let direct = egress("", "", "");
        for (asked, at_most) in [(16 * 1024, 64 * 1024), (64 * 1024, 256 * 1024)] {
            let tcp = direct.open(&url, asked).await.unwrap();
            let _accepted = listener.accept().await.unwrap();
            let socket = tokio::net::TcpSocket::from_std_stream(tcp.into_std().unwrap());
            let got = socket.recv_buffer_size().unwrap();
            assert!(got >= asked && got <= at_most, "asked {asked}, got {got}");
        }
        // 0: the kernel's default and its tuning (a larger buffer here).
        let tcp = direct.open(&url, 0).await.unwrap();
        let _accepted = listener.accept().await.unwrap();
        let socket = tokio::net::TcpSocket::from_std_stream(tcp.into_std().unwrap());
        assert!(socket.recv_buffer_size().unwrap() > 64 * 1024);
    }

    #[test]
    fn a_websocket_url_takes_the_proxy_of_its_http_scheme() {
        let e = egress("http://plain.proxy:3128", "http://tls.proxy:3128", "");
        assert_eq!(
            proxy_of(&e, "ws://studio.example:8080/calls").as_deref(),
            Some("http://plain.proxy:3128/")
        );
        assert_eq!(
            proxy_of(&e, "wss://studio.example/calls").as_deref(),
            Some("http://tls.proxy:3128/")
        );
    }

    #[test]
    fn no_proxy_exempts_hosts_domains_and_ranges() {
        let e = egress(
            "http://proxy:3128",
            "http://proxy:3128",
            "internal.example,.corp.example,10.0.0.0/8",
        );
        for direct in [
            "wss://internal.example/calls",
            "wss://studio.corp.example/calls",
            "ws://10.1.2.3:8080/calls",
        ] {
            assert_eq!(proxy_of(&e, direct), None, "{direct}");
        }
        assert!(proxy_of(&e, "wss://studio.example/calls").is_some());
    }

    #[test]
    fn without_proxy_variables_every_url_is_direct() {
        let e = egress("", "", "");
        assert_eq!(proxy_of(&e, "wss://studio.example/calls"), None);
    }

    #[test]
    fn a_proxy_is_named_without_its_credentials() {
        let uri: Uri = "http://user:s3cret@proxy.example:3128".parse().unwrap();
        let name = proxy_name(&uri);
        assert_eq!(name, "http://proxy.example:3128");
        assert!(!name.contains("s3cret"));
    }
}
