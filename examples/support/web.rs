//! The examples' web flags: `--web ADDR` serves the REST API and dashboard while the job runs
//! (printing `web: http://ADDR/` to stderr once it listens), `--web-token TOKEN` sets the
//! bearer token for savepoint / stop / cancel (generated and printed otherwise), `--web-keep`
//! keeps serving after the job ended, until Ctrl-C. Included with `#[path]` (not an example).
//! Needs the cargo feature `web` (`cargo run --features web --example ...`).

#![allow(dead_code, reason = "each example uses a part of it")]

use actorflow::prelude::*;

/// The web server an example was asked for, if any.
pub(crate) struct Web {
    #[cfg(feature = "web")]
    server: Option<actorflow::web::WebServer>,
    keep: bool,
}

static WEB: std::sync::OnceLock<Web> = std::sync::OnceLock::new();

/// The server [`from_args`] started (none before it ran, or without `--web`).
pub(crate) fn get() -> &'static Web {
    WEB.get_or_init(|| Web {
        #[cfg(feature = "web")]
        server: None,
        keep: false,
    })
}

/// Takes the web flags out of the process's arguments, starts the server if `--web` was
/// given (see [`get`]), and returns the other arguments (program name excluded).
pub(crate) fn from_args() -> Result<Vec<String>, String> {
    let mut rest = Vec::new();
    let (mut addr, mut token, mut keep) = (None, None, false);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--web" => {
                addr = Some(
                    it.next()
                        .ok_or("--web needs an address, e.g. 127.0.0.1:8081")?,
                )
            }
            "--web-token" => token = Some(it.next().ok_or("--web-token needs a value")?),
            "--web-keep" => keep = true,
            _ => rest.push(a),
        }
    }
    if addr.is_none() && (token.is_some() || keep) {
        return Err("--web-token and --web-keep need --web ADDR".into());
    }
    let web = start(addr, token, keep)?;
    WEB.set(web)
        .map_err(|_| "the web flags were read twice".to_string())?;
    Ok(rest)
}

#[cfg(feature = "web")]
fn start(addr: Option<String>, token: Option<String>, keep: bool) -> Result<Web, String> {
    let Some(addr) = addr else {
        return Ok(Web { server: None, keep });
    };
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| format!("--web {addr}: not an address like 127.0.0.1:8081 ({e})"))?;
    let mut config = actorflow::web::WebConfig::new(addr);
    let generated = token.is_none();
    if let Some(t) = token {
        config = config.token(t);
    }
    let server = actorflow::web::WebServer::start(config).map_err(|e| e.to_string())?;
    eprintln!("web: {}", server.url());
    if generated {
        eprintln!(
            "web token (for savepoint, stop and cancel): {}",
            server.token()
        );
    }
    Ok(Web {
        server: Some(server),
        keep,
    })
}

#[cfg(not(feature = "web"))]
fn start(addr: Option<String>, _token: Option<String>, keep: bool) -> Result<Web, String> {
    match addr {
        Some(_) => Err(
            "--web needs the cargo feature `web`: cargo run --release --features web --example ..."
                .into(),
        ),
        None => Ok(Web { keep }),
    }
}

impl Web {
    /// Shows `env`'s jobs on the server (if any).
    pub(crate) fn attach(&self, env: &StreamExecutionEnvironment) {
        #[cfg(feature = "web")]
        if let Some(s) = &self.server {
            env.use_web(s);
        }
        #[cfg(not(feature = "web"))]
        let _ = env;
    }

    /// With `--web-keep`: serves until Ctrl-C (inside a tokio runtime).
    pub(crate) async fn keep_serving(&self) {
        #[cfg(feature = "web")]
        if let (true, Some(s)) = (self.keep, &self.server) {
            eprintln!(
                "web: still serving {} (--web-keep); Ctrl-C to stop",
                s.url()
            );
            if let Err(e) = s.serve_until_ctrl_c().await {
                eprintln!("web: {e}");
            }
        }
    }

    /// With `--web-keep`: serves until Ctrl-C (outside a tokio runtime).
    pub(crate) fn keep_serving_blocking(&self) {
        if !self.keep {
            return;
        }
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(self.keep_serving()),
            Err(e) => eprintln!("web: cannot wait for Ctrl-C: {e}"),
        }
    }
}
