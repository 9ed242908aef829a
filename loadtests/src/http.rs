//! A plain HTTP/1.1 request on loopback, read to the server's close, for tests and
//! benchmarks that look at the daemons' HTTP endpoints (the API and its controls, an SSE
//! stream to its end, /metrics, the sink's report) as raw text, with no client library in
//! between.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// No answer takes longer, an SSE stream included.
const LIMIT: Duration = Duration::from_secs(60);

/// A response: its status, its head (status line and headers) and its body.
pub struct Got {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Got {
    /// A header's value (the first, by case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix(&prefix).map(|v| v.trim().to_string()))
    }

    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {}", self.body))
    }
}

/// `GET path` with `headers` (name, value).
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Got> {
    request(addr, "GET", path, headers).await
}

/// `method path` with `headers` (name, value) and no body, as from host `test`.
pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Got> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    let extra: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    let length = if method == "GET" { "" } else { "Content-Length: 0\r\n" };
    let request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}{length}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(LIMIT, stream.read_to_end(&mut response)).await.context("no answer in time")??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").context("a response without a head")?;
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).context("no status")?;
    Ok(Got { status, head: head.to_string(), body: body.to_string() })
}
