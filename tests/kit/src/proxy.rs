//! A loopback HTTP CONNECT proxy, as an egress proxy of a company network
//! would be: it tunnels to the targets it is told to reach, by a route
//! table (so an upstream can be reachable only through it), and records
//! every CONNECT it was asked for.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The proxy, serving on the caller's tokio runtime until dropped.
pub struct ConnectProxy {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
    server: tokio::task::JoinHandle<()>,
}

impl ConnectProxy {
    /// `routes`: CONNECT target (`host:port`) → where the tunnel really
    /// goes. A target without a route is refused with 403.
    pub async fn start(routes: HashMap<String, SocketAddr>) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let routes = Arc::new(routes);
        let log = asked.clone();
        let server = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, routes.clone(), log.clone()));
            }
        });
        ConnectProxy {
            addr,
            asked,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`, as `HTTP_PROXY` names it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every CONNECT target asked for so far, in order.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// One client: its CONNECT request, then the tunnel.
async fn serve(
    mut client: TcpStream,
    routes: Arc<HashMap<String, SocketAddr>>,
    asked: Arc<Mutex<Vec<String>>>,
) {
    let Some(head) = read_head(&mut client).await else {
        return;
    };
    let target = head
        .strip_prefix("CONNECT ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    asked.lock().unwrap().push(target.clone());
    let Some(&to) = routes.get(&target) else {
        let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n").await;
        return;
    };
    let Ok(mut server) = TcpStream::connect(to).await else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
        .is_ok()
    {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
}

/// The request head, up to the blank line (None if the client left first).
async fn read_head(client: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || client.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}
