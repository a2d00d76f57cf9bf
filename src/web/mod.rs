//! Watching and steering running jobs over HTTP (cargo feature `web`): a REST API with Flink's
//! paths and JSON field names, Prometheus metrics at `/metrics`, a live event stream, and a
//! web dashboard at `/`, all served by [actix-web](https://actix.rs) from one
//! [`WebServer`].
//!
//! ```no_run
//! use actorflow::prelude::*;
//! use actorflow::web::WebConfig;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let env = StreamExecutionEnvironment::new();
//! let web = env.enable_web(WebConfig::new("127.0.0.1:8081".parse()?))?;
//! eprintln!("web: {}  token: {}", web.url(), web.token());
//! env.from_sequence(1, 1_000).print();
//! env.execute_blocking("watched")?;
//! # Ok(())
//! # }
//! ```
//!
//! * Everything that changes a job (`POST /jobs/{id}/savepoints`, `POST /jobs/{id}/stop`,
//!   `PATCH /jobs/{id}?mode=cancel`) needs `Authorization: Bearer TOKEN`; the token is
//!   [`WebConfig::token`] or generated at start ([`WebServer::token`]). Reading needs none.
//! * No CORS headers: another site's page in the user's browser cannot read the API.
//! * The server runs on a thread of its own (one actix worker), so a busy job does not slow
//!   the API and a slow client does not slow the job. It reads metrics the subtasks publish
//!   (atomics, updated per batch) and samples them once a second for rates.
//!
//! The endpoints and the metrics are listed in `docs/web.md`.

mod dashboard;
mod events;
mod json;
mod prometheus;
mod rest;

use actorflow_runtime::runtime::job::JobControl;
use actorflow_runtime::runtime::metrics::{JobMetricsSnapshot, SubtaskRates};
use actorflow_runtime::runtime::observer::JobStatus;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

/// How often the server samples every running job's metrics for rates and ratios.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How many savepoint and stop requests the server remembers (the oldest go first).
const TRIGGERS_KEPT: usize = 256;

/// Where and how the web server listens.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The address to bind. Loopback unless you choose otherwise: the API lets anyone who can
    /// reach it read the jobs' metrics and plans.
    pub addr: SocketAddr,
    /// The bearer token for requests that change a job; `None`: generated at start.
    pub token: Option<String>,
}

impl WebConfig {
    /// Listen on `addr` with a generated token.
    pub fn new(addr: SocketAddr) -> Self {
        WebConfig { addr, token: None }
    }

    /// Use `token` as the bearer token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
}

impl From<SocketAddr> for WebConfig {
    fn from(addr: SocketAddr) -> Self {
        WebConfig::new(addr)
    }
}

/// Why the web server could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The token is empty or holds characters a header cannot carry.
    #[error("the web token must be 1 to 256 visible ASCII characters")]
    BadToken,
    /// The server's thread could not start.
    #[error("cannot start the web server: {0}")]
    Start(String),
}

/// One job the server shows.
pub(crate) struct JobEntry {
    pub(crate) control: JobControl,
    pub(crate) plan_text: String,
    /// The newest sample of its metrics and the rates over the second before it.
    samples: Mutex<Samples>,
}

#[derive(Default)]
struct Samples {
    latest: Option<JobMetricsSnapshot>,
    rates: Vec<SubtaskRates>,
}

impl JobEntry {
    /// The job's metrics now, and the rates over the newest sampled second (sampling now if
    /// nothing was sampled yet). Counters are read fresh: they are atomics, and a finished
    /// job must show its final counts.
    pub(crate) fn sampled(&self) -> (JobMetricsSnapshot, Vec<SubtaskRates>) {
        let now = self.control.metrics();
        let mut s = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let restarted = s
            .latest
            .as_ref()
            .is_some_and(|l| l.restarts != now.restarts);
        if s.latest.is_none() || restarted {
            // Rates of the subtasks that run now, not of the ones a restart replaced.
            s.add(now.clone());
        }
        (now, s.rates.clone())
    }

    fn sample(&self) {
        let mut s = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        s.sample(&self.control);
    }
}

impl Samples {
    fn sample(&mut self, control: &JobControl) {
        self.add(control.metrics());
    }

    fn add(&mut self, now: JobMetricsSnapshot) {
        self.rates = match &self.latest {
            Some(then)
                if then.subtasks.len() == now.subtasks.len() && then.restarts == now.restarts =>
            {
                now.rates_since(then)
            }
            // The first sample, or a restart replaced the subtasks (their counters start from
            // zero): over each subtask's own life so far.
            _ => lifetime_rates(&now),
        };
        self.latest = Some(now);
    }
}

/// Rates of each subtask over its own life: its totals divided by the time it accounted
/// (busy + backpressured + idle), for subtasks there is no earlier sample of.
fn lifetime_rates(now: &JobMetricsSnapshot) -> Vec<SubtaskRates> {
    now.subtasks
        .iter()
        .map(|s| {
            let life = (s.busy + s.backpressured + s.idle).as_secs_f64().max(1e-3);
            let per_sec = |d: Duration| d.as_secs_f64() * 1e3 / life;
            SubtaskRates {
                vertex: s.vertex.clone(),
                subtask_index: s.subtask_index,
                records_in_per_sec: s.records_in as f64 / life,
                records_out_per_sec: s.records_out as f64 / life,
                busy_ms_per_sec: per_sec(s.busy),
                backpressured_ms_per_sec: per_sec(s.backpressured),
                idle_ms_per_sec: per_sec(s.idle),
            }
        })
        .collect()
}

/// A savepoint or stop-with-savepoint requested over the API.
#[derive(Debug, Clone)]
pub(crate) enum Trigger {
    InProgress,
    Completed { id: u64, location: String },
    Failed(String),
}

/// What the request handlers share.
pub(crate) struct WebState {
    pub(crate) token: String,
    pub(crate) jobs: RwLock<Vec<Arc<JobEntry>>>,
    /// Per (job id, request id): the request's status, in arrival order.
    pub(crate) triggers: Mutex<Vec<((String, String), Trigger)>>,
    pub(crate) started_ms: u64,
}

impl WebState {
    pub(crate) fn jobs(&self) -> Vec<Arc<JobEntry>> {
        self.jobs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn job(&self, id: &str) -> Option<Arc<JobEntry>> {
        self.jobs()
            .into_iter()
            .find(|j| j.control.observer().id().to_string() == id)
    }

    pub(crate) fn set_trigger(&self, job: &str, request: &str, t: Trigger) {
        let mut triggers = self.triggers.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (job.to_string(), request.to_string());
        if let Some(slot) = triggers.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = t;
            return;
        }
        if triggers.len() == TRIGGERS_KEPT {
            triggers.remove(0);
        }
        triggers.push((key, t));
    }

    pub(crate) fn trigger(&self, job: &str, request: &str) -> Option<Trigger> {
        let triggers = self.triggers.lock().unwrap_or_else(PoisonError::into_inner);
        triggers
            .iter()
            .find(|(k, _)| k.0 == job && k.1 == request)
            .map(|(_, t)| t.clone())
    }
}

/// A running web server. Cloning gives another handle on the same server; it stops when
/// [`stop`](Self::stop) is called or the process ends.
#[derive(Clone)]
pub struct WebServer {
    addr: SocketAddr,
    state: Arc<WebState>,
    handle: actix_web::dev::ServerHandle,
    done: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for WebServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn random_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let from_os = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !from_os {
        // No /dev/urandom: fall back to the clock and a counter (a weaker token).
        bytes = actorflow_runtime::JobId::generate().0;
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl WebServer {
    /// Binds `config.addr` and starts serving on a thread of its own. Jobs appear once
    /// [`register`](Self::register)ed (the environment does it for every job it runs after
    /// `enable_web`).
    ///
    /// # Errors
    ///
    /// [`WebError::Bind`] if the address cannot be bound, [`WebError::BadToken`] for an
    /// unusable token, [`WebError::Start`] if the thread cannot start.
    pub fn start(config: WebConfig) -> Result<WebServer, WebError> {
        let token = match config.token {
            Some(t) => {
                if t.is_empty() || t.len() > 256 || !t.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(WebError::BadToken);
                }
                t
            }
            None => random_token(),
        };
        let listener = TcpListener::bind(config.addr).map_err(|source| WebError::Bind {
            addr: config.addr,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| WebError::Bind {
            addr: config.addr,
            source,
        })?;
        let state = Arc::new(WebState {
            token,
            jobs: RwLock::new(Vec::new()),
            triggers: Mutex::new(Vec::new()),
            started_ms: actorflow_runtime::runtime::observer::wall_ms(),
        });
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let thread_state = state.clone();
        let thread = std::thread::Builder::new()
            .name("actorflow-web".into())
            .spawn(move || {
                let system = actix_web::rt::System::new();
                system.block_on(async move {
                    let app_state = thread_state.clone();
                    let server = actix_web::HttpServer::new(move || {
                        actix_web::App::new()
                            .app_data(actix_web::web::Data::from(app_state.clone()))
                            .configure(rest::routes)
                    })
                    .workers(1)
                    .disable_signals()
                    .shutdown_timeout(1)
                    .listen(listener);
                    let server = match server {
                        Ok(s) => s.run(),
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(server.handle()));
                    actix_web::rt::spawn(sampler(thread_state));
                    if let Err(e) = server.await {
                        tracing::error!("the web server stopped: {e}");
                    }
                });
            })
            .map_err(|e| WebError::Start(e.to_string()))?;
        let handle = rx
            .recv()
            .map_err(|_| WebError::Start("the server thread ended".into()))?
            .map_err(WebError::Start)?;
        tracing::info!(%addr, "web server listening");
        Ok(WebServer {
            addr,
            state,
            handle,
            done: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// The address it listens on (the real port when the configured one was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The bearer token requests that change a job must carry.
    pub fn token(&self) -> &str {
        &self.state.token
    }

    /// Shows `control`'s job (newest jobs are listed first).
    pub fn register(&self, control: JobControl, plan_text: String) {
        let entry = Arc::new(JobEntry {
            control,
            plan_text,
            samples: Mutex::new(Samples::default()),
        });
        self.state
            .jobs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(entry);
    }

    /// Stops serving and waits for the server's thread to end.
    pub fn stop(&self) {
        let handle = self.handle.clone();
        let stopped = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(handle.stop(true));
        });
        let _ = stopped.join();
        let thread = self
            .done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }

    /// Serves until the process gets Ctrl-C (SIGINT), then stops: `--web-keep` in the
    /// examples.
    ///
    /// # Errors
    ///
    /// If the signal handler cannot be installed.
    pub async fn serve_until_ctrl_c(&self) -> std::io::Result<()> {
        tokio::signal::ctrl_c().await?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.stop())
            .await
            .map_err(std::io::Error::other)
    }
}

/// Samples every job that is not over, once a second, for rates and ratios.
async fn sampler(state: Arc<WebState>) {
    let mut tick = actix_web::rt::time::interval(SAMPLE_EVERY);
    let mut final_sampled: HashMap<String, bool> = HashMap::new();
    loop {
        tick.tick().await;
        for job in state.jobs() {
            let observer = job.control.observer();
            let id = observer.id().to_string();
            if observer.status().is_terminal() {
                // One sample after the end, so the final counts show.
                if final_sampled.insert(id, true) == Some(true) {
                    continue;
                }
            }
            job.sample();
        }
    }
}

/// Is `status` one in which a savepoint can be asked for.
pub(crate) fn accepts_savepoints(status: JobStatus) -> bool {
    matches!(status, JobStatus::Running | JobStatus::Created)
}
