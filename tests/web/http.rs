//! A small HTTP/1.1 client for the tests: one request per connection (`Connection: close`),
//! bodies read to the end, and a line reader for server-sent events.

use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Every read and connect gives up after this long: a hang fails the test.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Response {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn head(
    method: &str,
    addr: std::net::SocketAddr,
    path: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> String {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PATCH" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    req
}

fn parse_head(text: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    (status, headers)
}

fn dechunk(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(pos) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_text = std::str::from_utf8(&rest[..pos]).unwrap_or("0");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        rest = &rest[pos + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[(size + 2).min(rest.len())..];
    }
    out
}

pub(crate) async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let work = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(head(method, addr, path, headers, body).as_bytes())
            .await
            .expect("write");
        // Read up to the end of the headers, then as much body as they announce (some
        // servers keep the connection open despite `Connection: close`).
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        let split = loop {
            if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            let n = s.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "connection closed before the headers: {:?}",
                String::from_utf8_lossy(&raw)
            );
            raw.extend_from_slice(&buf[..n]);
        };
        let (status, headers) = parse_head(&String::from_utf8_lossy(&raw[..split]));
        let mut body = raw[split + 4..].to_vec();
        let length = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok());
        let chunked = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
        });
        match length {
            Some(len) => {
                while body.len() < len {
                    let n = s.read(&mut buf).await.expect("read");
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&buf[..n]);
                }
                body.truncate(len);
            }
            None if chunked => {
                while !body.ends_with(b"0\r\n\r\n") {
                    let n = s.read(&mut buf).await.expect("read");
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&buf[..n]);
                }
                body = dechunk(&body);
            }
            None => {
                s.read_to_end(&mut body).await.expect("read");
            }
        }
        Response {
            status,
            headers,
            body: String::from_utf8(body).expect("UTF-8 body"),
        }
    };
    tokio::time::timeout(TIMEOUT, work)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer within {TIMEOUT:?}"))
}

pub(crate) async fn get(addr: std::net::SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], "").await
}

/// A server-sent event stream: `next` returns each event's (type, data) as it arrives.
pub(crate) struct Events {
    reader: BufReader<TcpStream>,
}

impl Events {
    pub(crate) async fn open(addr: std::net::SocketAddr, path: &str) -> (u16, Events) {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(head("GET", addr, path, &[("Accept", "text/event-stream")], "").as_bytes())
            .await
            .expect("write");
        let mut reader = BufReader::new(s);
        let mut head_text = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(TIMEOUT, reader.read_line(&mut line))
                .await
                .expect("header within the timeout")
                .expect("read");
            if n == 0 || line == "\r\n" {
                break;
            }
            head_text.push_str(&line);
        }
        let (status, _) = parse_head(&head_text);
        (status, Events { reader })
    }

    /// The next event, or `None` when the stream ends. Chunk-size lines of the chunked
    /// encoding and comments are skipped.
    pub(crate) async fn next(&mut self) -> Option<(String, serde_json::Value)> {
        let mut kind = None;
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(TIMEOUT, self.reader.read_line(&mut line))
                .await
                .expect("an event within the timeout")
                .ok()?;
            if n == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(k) = line.strip_prefix("event: ") {
                kind = Some(k.to_string());
            } else if let Some(d) = line.strip_prefix("data: ") {
                let data = serde_json::from_str(d).expect("event data is JSON");
                return Some((kind.take().unwrap_or_default(), data));
            } else if line == "0" && kind.is_none() {
                // The last chunk: the stream ended.
                return None;
            }
        }
    }
}
