//! The dashboard in a real headless Chromium, driven through ChromeDriver's WebDriver API,
//! against running examples. `scripts/chromium.sh` installs both (`.ci/run` calls it); in CI a
//! missing browser fails these tests, elsewhere they say how to install it and pass.

use crate::common::example_binary;
use crate::http::{Response, get, request};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "browser-test-token";

/// How long a condition on the page may take to hold.
const PAGE_TIMEOUT: Duration = Duration::from_secs(60);

fn find(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| p.to_string())
}

/// ChromeDriver and Chromium, or `None` outside CI when they are not installed.
fn tools() -> Option<(String, String)> {
    let driver = find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]);
    let chromium = find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]);
    match (driver, chromium) {
        (Some(d), Some(c)) => Some((d, c)),
        _ if std::env::var_os("CI").is_some() => panic!(
            "chromium and chromedriver are needed for the dashboard tests: run scripts/chromium.sh"
        ),
        _ => {
            eprintln!(
                "NOT RUN: the dashboard tests need Debian's chromium and chromium-driver; install them with `bash scripts/chromium.sh`"
            );
            None
        }
    }
}

/// A running example with `--web 127.0.0.1:0`: its process and the server's address.
pub(crate) struct Example {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl Example {
    pub(crate) fn start(name: &str, args: &[&str]) -> Example {
        let mut child = Command::new(example_binary(name))
            .args(args)
            .args(["--web", "127.0.0.1:0", "--web-token", TOKEN])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("web: http://")
                    && let Some(t) = tx.take()
                {
                    let _ = t.send(url.trim_end_matches('/').to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("{name} printed no `web:` line"));
        Example {
            child,
            addr: addr.parse().unwrap(),
        }
    }

    /// The id of the newest job on the server, once there is one.
    pub(crate) async fn job(&self) -> String {
        let deadline = tokio::time::Instant::now() + PAGE_TIMEOUT;
        loop {
            let jobs = get(self.addr, "/jobs").await.json();
            if let Some(id) = jobs["jobs"][0]["id"].as_str() {
                return id.to_string();
            }
            assert!(tokio::time::Instant::now() < deadline, "no job appeared");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A ChromeDriver process with one headless Chromium session.
pub(crate) struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    pub(crate) async fn start() -> Option<Browser> {
        let (driver_path, chromium) = tools()?;
        let port = free_port();
        let driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok()
                && get(addr, "/status").await.json()["value"]["ready"] == true
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile =
            std::env::temp_dir().join(format!("actorflow-chromium-{}-{port}", std::process::id()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-background-networking", "--no-first-run",
                         "--disable-component-update", "--disable-sync", "--disable-quic",
                         "--window-size=1400,900",
                         format!("--user-data-dir={}", profile.display())],
            }
        }}});
        let r = request(addr, "POST", "/session", &[], &caps.to_string()).await;
        assert_eq!(r.status, 200, "new session: {}", r.body);
        let session = r.json()["value"]["sessionId"].as_str().unwrap().to_string();
        Some(Browser {
            driver,
            addr,
            session,
            _profile: TempDir(profile),
        })
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let body = if method == "GET" {
            String::new()
        } else {
            body.to_string()
        };
        let r: Response = request(self.addr, method, &path, &[], &body).await;
        assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
        r.json()["value"].clone()
    }

    pub(crate) async fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url })).await;
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub(crate) async fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// Waits until `script` returns something truthy (not null, false, 0 or ""), and returns it.
    pub(crate) async fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PAGE_TIMEOUT;
        loop {
            let v = self.script(script).await;
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if tokio::time::Instant::now() > deadline {
                let page = self
                    .script("return document.getElementById('app').innerText")
                    .await;
                panic!("the page never showed {what}; it shows:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element `css` selects. The page redraws every second, so an element found
    /// just before a redraw may be gone ("stale") when clicked: then it is found again.
    pub(crate) async fn click(&self, css: &str) {
        // Up to 10 s: on a loaded 2-core CI machine a second's worth of tries was not enough.
        let mut last = String::from("no such element");
        for _ in 0..200 {
            let found = request(
                self.addr,
                "POST",
                &format!("/session/{}/element", self.session),
                &[],
                &json!({ "using": "css selector", "value": css }).to_string(),
            )
            .await;
            let id = found.json()["value"]
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(Value::as_str)
                .map(str::to_string);
            if let Some(id) = id {
                let r = request(
                    self.addr,
                    "POST",
                    &format!("/session/{}/element/{id}/click", self.session),
                    &[],
                    "{}",
                )
                .await;
                if r.status == 200 {
                    return;
                }
                last = format!("{}: {}", r.status, r.json());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("cannot click {css}; last answer: {last}");
    }

    /// Saves a PNG of the window.
    pub(crate) async fn screenshot(&self, path: &std::path::Path) {
        let b64 = self.call("GET", "/screenshot", Value::Null).await;
        std::fs::write(path, decode_base64(b64.as_str().unwrap())).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session, which quits Chromium (a plain blocking request: no runtime here).
        if let Ok(mut s) = std::net::TcpStream::connect(self.addr) {
            use std::io::{Read, Write};
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.session, self.addr
            );
            let _ = s.read_to_end(&mut Vec::new());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

pub(crate) const AUTH_TOKEN: &str = TOKEN;
